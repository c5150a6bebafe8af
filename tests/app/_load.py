"""Traffic for the app, uninstrumented (urllib): a load of shop requests at a steady rate,
probes, and the fixed script the fixtures are recorded from."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.app._cluster import Cluster
from tests.app._services import ITEMS, ORDERS


def call(url: str, method: str = "GET", body: object | None = None, timeout: float = 30) -> int:
    """One request; its HTTP status (0 when no answer came)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
    except OSError:
        return 0


@dataclass(frozen=True)
class Request:
    """A shop request to frontend: ``kind`` names it in the counts."""

    kind: str
    method: str
    path: str
    body: dict[str, int] | None = None


def shop_request(rng: random.Random) -> Request:
    """The mix: order pages 60 %, new orders 25 %, order lists (a query string) 15 %."""
    draw = rng.random()
    if draw < 0.60:
        return Request("show_order", "GET", f"/order/{rng.randint(1, ORDERS)}")
    if draw < 0.85:
        body = {"item_id": rng.randint(1, ITEMS), "quantity": rng.randint(1, 3)}
        return Request("place_order", "POST", "/order", body)
    status = rng.choice(["open", "shipped"])
    return Request("list_orders", "GET", f"/orders?status={status}")


def probe(cluster: Cluster) -> list[int]:
    """One round of probes: ``GET /healthz`` on every service, ``GET /`` (no such route) on
    frontend."""
    statuses = [call(f"{url}/healthz", timeout=5) for url in cluster.urls.values()]
    statuses.append(call(f"{cluster.urls['frontend']}/", timeout=5))
    return statuses


class Load:
    """Shop requests to frontend at ``rate`` a second (open loop: a slow answer does not slow
    the next request, up to ``workers`` in flight), and a round of probes every
    ``probe_every`` seconds, in background threads until :meth:`stop`."""

    def __init__(
        self,
        cluster: Cluster,
        rate: float = 20,
        probe_every: float = 5,
        seed: int = 1,
        workers: int = 64,
    ) -> None:
        self._cluster = cluster
        self._rate = rate
        self._probe_every = probe_every
        self._rng = random.Random(seed)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="load")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, int]] = Counter()
        self._threads = [
            threading.Thread(target=self._drive, daemon=True),
            threading.Thread(target=self._probe, daemon=True),
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _count(self, kind: str, status: int) -> None:
        with self._lock:
            self.counts[kind, status] += 1

    def _send(self, req: Request) -> None:
        url = self._cluster.urls["frontend"] + req.path
        self._count(req.kind, call(url, req.method, req.body))

    def _drive(self) -> None:
        interval = 1 / self._rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._pool.submit(self._send, shop_request(self._rng))
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _probe(self) -> None:
        while not self._stop.wait(self._probe_every):
            for status in probe(self._cluster):
                self._count("probe", status)

    def snapshot(self) -> Counter[tuple[str, int]]:
        """The answers so far, by (kind, status)."""
        with self._lock:
            return Counter(self.counts)

    def stop(self) -> Counter[tuple[str, int]]:
        """Stop sending, wait for the answers in flight; the counts by (kind, status)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._pool.shutdown(wait=True)
        return self.snapshot()


# The recording: every shape of span the app makes, each a few times. A step is a fault to
# switch (("fault", {...})), requests to send ((Request, count)) or a round of probes.
Step = tuple[str, object]

SCRIPT: list[Step] = [
    ("probe", None),
    ("send", (Request("show_order", "GET", "/order/7"), 4)),
    ("send", (Request("place_order", "POST", "/order", {"item_id": 3, "quantity": 2}), 2)),
    ("send", (Request("list_orders", "GET", "/orders?status=open"), 2)),
    ("send", (Request("missing_order", "GET", f"/order/{ORDERS + 900}"), 1)),
    ("send", (Request("no_route", "GET", "/favicon.ico"), 1)),
    ("probe", None),
    ("fault", {"kind": "keyerror", "share": 1.0}),
    ("send", (Request("show_order", "GET", "/order/8"), 2)),
    ("send", (Request("place_order", "POST", "/order", {"item_id": 4, "quantity": 1}), 2)),
    ("fault", {"kind": "slow_sql", "ms": 120}),
    ("send", (Request("show_order", "GET", "/order/9"), 2)),
    ("send", (Request("place_order", "POST", "/order", {"item_id": 5, "quantity": 1}), 1)),
    ("fault", {"kind": "slow_http", "ms": 80}),
    ("send", (Request("show_order", "GET", "/order/10"), 1)),
    ("fault", {"kind": "off"}),
    ("send", (Request("show_order", "GET", "/order/11"), 2)),
    ("probe", None),
]


def run_script(
    cluster: Cluster,
    script: list[Step] = SCRIPT,
    on_status: Callable[[str, int], None] | None = None,
) -> Counter[tuple[str, int]]:
    """Run ``script`` one request at a time; the counts by (kind, status)."""
    counts: Counter[tuple[str, int]] = Counter()
    for action, arg in script:
        if action == "fault":
            assert isinstance(arg, dict)
            cluster.set_fault(**arg)
        elif action == "probe":
            for status in probe(cluster):
                counts["probe", status] += 1
        else:
            assert isinstance(arg, tuple)
            req, times = arg
            for _ in range(times):
                status = call(cluster.urls["frontend"] + req.path, req.method, req.body)
                counts[req.kind, status] += 1
                if on_status is not None:
                    on_status(req.kind, status)
    return counts
