"""GET /api/incidents (filters, paging), GET /api/status, and the same on the page's listener."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from spanwatch.model import Event, EventType, Pattern
from tests.conftest import RunningDaemon
from tests.events import T0, incident


def _get(url: str, token: str = "") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode()


def _publish_history(daemon: RunningDaemon) -> None:
    """Seven incidents: checkout SEV1-2 open, search SEV4, one resolved, one with a namespace."""
    hub = daemon.daemon.hub
    for n in range(1, 5):
        inc = replace(incident(n, severity=1 + n % 2), detected_at_ns=T0 + n * 10**9)
        hub.publish(Event.incident(EventType.INCIDENT_OPENED, inc))
    hub.publish(
        Event.incident(
            EventType.INCIDENT_OPENED,
            replace(
                incident(5, severity=4, service="search", pattern=Pattern.LATENCY_DRIFT),
                detected_at_ns=T0 + 5 * 10**9,
            ),
        )
    )
    resolved = replace(incident(1, severity=2), resolved_at_ns=T0 + 99 * 10**9)
    resolved = replace(resolved, detected_at_ns=T0 + 10**9)
    hub.publish(Event.incident(EventType.INCIDENT_RESOLVED, resolved))
    scoped = {
        **incident(6, service="cart").to_dict(),
        "namespace": "shop",
        "environment": "prod",
        "detected_at": "2025-11-24T16:00:40.000000000Z",
    }
    hub.publish(Event(str(EventType.INCIDENT_OPENED), {"incident": scoped}))
    daemon.daemon.store.flush()


def _ids(body: dict[str, Any]) -> list[str]:
    return [i["id"] for i in body["incidents"]]


def test_history_with_filters(daemon: RunningDaemon) -> None:
    """Newest first; status, service (also a root cause or a spanned service), severity,
    pattern, namespace and environment filter; counts of open and resolved come along."""
    _publish_history(daemon)
    base = f"{daemon.http_url}/api/incidents"
    status, body = _get(base)
    assert status == 200
    assert _ids(body) == ["inc-6", "inc-5", "inc-4", "inc-3", "inc-2", "inc-1"]
    assert body["counts"] == {"open": 5, "resolved": 1}
    assert body["next_cursor"] is None
    assert body["incidents"][-1]["status"] == "resolved"
    assert body["incidents"][-1]["resolved_at"].startswith("2025-")

    assert _ids(_get(f"{base}?status=open")[1]) == ["inc-6", "inc-5", "inc-4", "inc-3", "inc-2"]
    assert _ids(_get(f"{base}?status=resolved")[1]) == ["inc-1"]
    assert _ids(_get(f"{base}?service=search")[1]) == ["inc-5"]
    # payments is the root cause of every incident built by tests.events
    assert len(_ids(_get(f"{base}?service=payments")[1])) == 6
    assert _ids(_get(f"{base}?min_severity=1")[1]) == ["inc-4", "inc-2"]
    assert _ids(_get(f"{base}?pattern=latency_drift")[1]) == ["inc-5"]
    assert _ids(_get(f"{base}?namespace=shop&environment=prod")[1]) == ["inc-6"]
    assert _ids(_get(f"{base}?environment=staging")[1]) == []


def test_paging_with_a_cursor(daemon: RunningDaemon) -> None:
    """limit and next_cursor walk the whole history once, in order, with no repeat."""
    _publish_history(daemon)
    base = f"{daemon.http_url}/api/incidents?limit=4"
    seen: list[str] = []
    url = base
    for _ in range(5):
        status, body = _get(url)
        assert status == 200
        seen += _ids(body)
        if not body["next_cursor"]:
            break
        url = f"{base}&cursor={body['next_cursor']}"
    assert seen == ["inc-6", "inc-5", "inc-4", "inc-3", "inc-2", "inc-1"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=closed", "status must be open or resolved"),
        ("min_severity=0", "min_severity must be 1 to 5"),
        ("limit=many", "limit must be a number"),
        ("cursor=!!", "cursor is not one this API gave"),
    ],
)
def test_bad_queries_are_400_with_a_reason(daemon: RunningDaemon, query: str, message: str) -> None:
    """Each bad parameter is refused with 400 and says what it accepts."""
    status, body = _get(f"{daemon.http_url}/api/incidents?{query}")
    assert status == 400
    assert message in body["error"]


def test_the_page_listener_serves_history_and_status(daemon: RunningDaemon) -> None:
    """The live page reads /api/incidents and /api/status from its own origin."""
    _publish_history(daemon)
    page = f"http://127.0.0.1:{daemon.daemon.ws.port}"
    status, body = _get(f"{page}/api/incidents?status=open&service=checkout")
    assert status == 200
    assert _ids(body) == ["inc-4", "inc-3", "inc-2"]
    status, body = _get(f"{page}/api/status")
    assert status == 200
    assert body["incidents"] == {"open": 5, "resolved": 1}
    assert {"accepted_spans", "refused_spans", "spans_per_s"} <= set(body["ingest"])
    assert "keys" in body["detector"] and "late_spans" in body["detector"]
    assert _get(f"{daemon.http_url}/api/status")[0] == 200


def test_status_reports_the_ingest_rate(daemon: RunningDaemon) -> None:
    """Spans accepted over the last seconds show as spans_per_s."""
    import time

    from tests.otlp_client import grpc_export
    from tests.otlp_payloads import many_spans

    body = many_spans(200).SerializeToString()
    for _ in range(3):
        assert grpc_export(daemon.grpc_target, body).code.name == "OK"
        time.sleep(1.1)
    _, body = _get(f"{daemon.http_url}/api/status")
    assert body["ingest"]["accepted_spans"] >= 600
    assert body["ingest"]["spans_per_s"] > 0


def test_page_endpoints_want_the_token(make_daemon: Callable[..., RunningDaemon]) -> None:
    """With auth.token set, the page's API asks for it (header or ?token=); the page stays open."""
    daemon = make_daemon(**{"auth.token": "t0k"})
    page = f"http://127.0.0.1:{daemon.daemon.ws.port}"
    assert _get(f"{page}/api/incidents")[0] == 401
    assert _get(f"{page}/api/incidents", token="t0k")[0] == 200
    assert _get(f"{page}/api/status?token=t0k")[0] == 200
    assert _get(f"{daemon.http_url}/api/incidents")[0] == 401
    with urllib.request.urlopen(f"{page}/") as resp:
        assert resp.status == 200


def test_cli_lists_incidents(daemon: RunningDaemon) -> None:
    """spanwatch incidents --open --service S prints one line per incident, rounded evidence."""
    _publish_history(daemon)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spanwatch.cli", "--api", daemon.http_url, "incidents", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    done = cli("--open", "--service", "checkout")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("SEV")]
    assert [line.split()[-1] for line in lines] == ["inc-4", "inc-3", "inc-2"]
    assert "error_rate 42% against a baseline of 1.0%" in done.stdout
    assert "ago" in lines[0]
    done = cli("--resolved", "--json")
    assert [i["id"] for i in json.loads(done.stdout)] == ["inc-1"]
    done = cli("--namespace", "shop", "--environment", "prod")
    assert [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("SEV")] == [
        "inc-6"
    ]
    assert "shop/prod" in done.stdout
    done = cli("--service", "nobody")
    assert done.stdout.strip() == "no incidents match"
