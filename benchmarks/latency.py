"""Detection latency: from the Export call that closes a window to ``incident.opened``.

A client sends one OTLP request per 10-second window of event time (as fast as it goes, event
time is in the spans): probe services with a healthy baseline, and background services filling
each request up to the Collector's default batch of 8192 spans. After the warm-up, window k
holds an error burst in probe service k; the request of window k+1 moves event time past the
window's lateness, so the daemon closes window k and must publish the incident. The figure is
the time from sending that request to the ``incident.opened`` arriving on a WebSocket
subscriber, one probe at a time, each sent once the daemon has filed everything before it.

The reference, in the same run: the same requests sent to a grpcio receiver that parses each
one (upb) and reads 8 fields of every span — the time to get a request in at all. Two request
sizes by default: 2048 spans (an SDK exporter's batch is 512 by default) and 8192 (the
Collector's batch processor default); the probes make at least 1200.

Usage: python benchmarks/latency.py [--probes 60] [--request-spans 2048 8192]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from websockets.asyncio.client import connect

from _common import daemon_command, free_port, write_results
from ingest import METHOD, daemon_settler, wait_port
from spanwatch.model import SpanBatch, SpanKind, StatusCode
from spanwatch.otlp import encode_batch

NS = 1_000_000_000
WINDOW_NS = 10 * NS
PROBE_SPANS = 20  # per probe service and window: enough for an error burst to be certain
WARMUP_WINDOWS = 15


def window_request(
    window: int, probes: int, faulty: int, request_spans: int, rng: random.Random
) -> bytes:
    """Window ``window``'s spans: every probe (probe ``faulty`` failing) and the background."""
    start = 1_800_000_000 * NS + window * WINDOW_NS
    services, names, codes = [], [], []
    for p in range(probes):
        services += [f"probe-{p:03d}"] * PROBE_SPANS
        names += ["GET /api/probe"] * PROBE_SPANS
        code = StatusCode.ERROR if p == faulty else StatusCode.UNSET
        codes += [code] * PROBE_SPANS
    background = max(0, request_spans - len(services))
    services += [f"background-{i % 50:02d}" for i in range(background)]
    names += [f"GET /api/items/{i % 7}" for i in range(background)]
    codes += [StatusCode.UNSET] * background
    n = len(services)
    # Spans end all through the window, so the request's last ones close the previous window.
    ends = sorted(start + rng.randrange(WINDOW_NS) for _ in range(n))
    batch = SpanBatch.filled(
        n,
        trace_id=[rng.getrandbits(128).to_bytes(16, "big") for _ in range(n)],
        span_id=[rng.getrandbits(64).to_bytes(8, "big") for _ in range(n)],
        service=services,
        name=names,
        kind=[SpanKind.SERVER] * n,
        start_ns=[end - int(rng.lognormvariate(16, 0.3)) for end in ends],
        end_ns=ends,
        status_code=codes,
        status_message=["upstream failed" if c == StatusCode.ERROR else "" for c in codes],
    )
    return bytes(encode_batch(batch).SerializeToString())


def requests_for(probes: int, request_spans: int) -> list[bytes]:
    rng = random.Random(11)
    total = WARMUP_WINDOWS + probes + 1
    return [window_request(w, probes, w - WARMUP_WINDOWS, request_spans, rng) for w in range(total)]


def run_daemon(requests: list[bytes], probes: int) -> list[float]:
    gport, hport, wport = free_port(), free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="spanwatch-bench-")
    command = daemon_command(
        gport, hport, "--ws-listen", f"127.0.0.1:{wport}", "--data-dir", data_dir
    )
    env = {**os.environ, "SPANWATCH_LOG__LEVEL": "warning"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_port(wport)
        wait_port(gport)
        return asyncio.run(time_incidents(requests, probes, gport, hport, wport))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


async def time_incidents(
    requests: list[bytes], probes: int, gport: int, hport: int, wport: int
) -> list[float]:
    lags: list[float] = []
    async with (
        connect(f"ws://127.0.0.1:{wport}/events") as ws,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{gport}", options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel,
    ):
        export = channel.unary_unary(METHOD)
        for body in requests[: WARMUP_WINDOWS + 1]:
            await export(body, timeout=60)
        settle = daemon_settler(hport)
        for probe in range(probes):
            # Timed from an idle daemon: the rest of the last request (still being filed after
            # its incident went out) is not this one's latency.
            await asyncio.to_thread(settle)
            sent = time.perf_counter()
            await export(requests[WARMUP_WINDOWS + probe + 1], timeout=60)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] != "incident.opened":
                    continue
                if message["incident"]["service"] == f"probe-{probe:03d}":
                    lags.append(time.perf_counter() - sent)
                    break
    return lags


def run_reference(requests: list[bytes], probes: int) -> list[float]:
    port = free_port()
    command = [
        sys.executable,
        os.path.join(os.path.dirname(__file__), "ingest.py"),
        "--serve-reference",
        "fields",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        return asyncio.run(time_exports(requests, probes, port))
    finally:
        proc.terminate()
        proc.wait(30)


async def time_exports(requests: list[bytes], probes: int, port: int) -> list[float]:
    lags: list[float] = []
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        export = channel.unary_unary(METHOD)
        for body in requests[: WARMUP_WINDOWS + 1]:
            await export(body, timeout=60)
        for probe in range(probes):
            sent = time.perf_counter()
            await export(requests[WARMUP_WINDOWS + probe + 1], timeout=60)
            lags.append(time.perf_counter() - sent)
    return lags


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summary(lags: list[float]) -> dict[str, float]:
    return {
        "p50_ms": quantile(lags, 0.5) * 1e3,
        "p99_ms": quantile(lags, 0.99) * 1e3,
        "max_ms": max(lags) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=60, help="incidents to time, per size")
    parser.add_argument(
        "--request-spans",
        type=int,
        nargs="+",
        default=[2048, 8192],
        help="spans per request: an SDK-sized and a Collector-sized batch",
    )
    args = parser.parse_args()
    sizes = {}
    print(f"{'request spans':>13s} {'path':12s} {'p50':>9s} {'p99':>9s} {'max':>9s}")
    for size in args.request_spans:
        requests = requests_for(args.probes, size)
        lags = {"reference": run_reference(requests, args.probes)}
        lags["spanwatchd"] = run_daemon(requests, args.probes)
        rows = {name: summary(values) for name, values in lags.items()}
        for name, row in rows.items():
            print(
                f"{size:>13,} {name:12s} {row['p50_ms']:>7.1f}ms {row['p99_ms']:>7.1f}ms "
                f"{row['max_ms']:>7.1f}ms"
            )
        ratio = rows["spanwatchd"]["p99_ms"] / rows["reference"]["p99_ms"]
        print(f"{'':>13s} p99 ratio spanwatchd / reference: {ratio:.2f}")
        sizes[str(size)] = {
            "rows": rows,
            "p99_ratio": ratio,
            "lags_ms": {name: [x * 1e3 for x in values] for name, values in lags.items()},
        }
    write_results("latency", {"probes": args.probes, "request_spans": sizes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
