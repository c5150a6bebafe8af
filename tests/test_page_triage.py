"""The page as a triage tool, in headless Chromium: history after a restart, filters, the
incident view (chart, waterfall, trace links), the header, the empty state. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from spanwatch.model import Event, EventType, Evidence, PathStep, Pattern, rfc3339_ns
from tests.conftest import RunningDaemon
from tests.events import analysis_events, incident
from tests.tools import browser_page

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
TEMPO = "https://tempo.example/trace/{trace_id}"


@pytest.fixture
def page() -> Iterator[Any]:
    with browser_page() as page:
        yield page


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _now_incident(n: int, ago_s: float, **kwargs: Any) -> Any:
    """An incident detected ``ago_s`` seconds ago (wall clock), started a minute before."""
    detected = time.time_ns() - int(ago_s * 1e9)
    return replace(
        incident(n, **kwargs), started_at_ns=detected - 60_000_000_000, detected_at_ns=detected
    )


def _scoped(inc: Any, namespace: str, environment: str) -> dict[str, Any]:
    return {**inc.to_dict(), "namespace": namespace, "environment": environment}


def _publish(daemon: RunningDaemon, kind: EventType, body: Any) -> None:
    fields = body if isinstance(body, dict) else body.to_dict()
    daemon.daemon.hub.publish(Event(str(kind), {"incident": fields}))


def _open(page: Any, daemon: RunningDaemon, query: str = "") -> None:
    page.goto(f"http://127.0.0.1:{daemon.daemon.ws.port}/{query}")
    page.wait_for_selector("#conn.live")


def test_reload_after_a_restart_shows_the_history(
    make_daemon: Callable[..., RunningDaemon], page: Any, tmp_path: Path
) -> None:
    """Incidents, analyses and ratings in SQLite reappear after a daemon restart, open and
    resolved apart, with relative times and rounded numbers."""
    data = str(tmp_path / "state")
    first = make_daemon(**{"storage.data_dir": data})
    slow = replace(
        _now_incident(1, 180, severity=1, pattern=Pattern.LATENCY_SPIKE),
        evidence=Evidence("p99_latency", 45.193075, 5.732867, "ms"),
    )
    _publish(first, EventType.INCIDENT_OPENED, _scoped(slow, "shop", "prod"))
    old = _now_incident(2, 3 * 3600, severity=3, service="search")
    _publish(first, EventType.INCIDENT_OPENED, old)
    _publish(
        first,
        EventType.INCIDENT_RESOLVED,
        replace(old, resolved_at_ns=old.detected_at_ns + 600_000_000_000),
    )
    for event in analysis_events("a1", ["inc-1"], ["The orders ", "database is slow."]):
        first.daemon.hub.publish(event)
    first.daemon.store.flush()
    first.call(first.daemon.ratings.rate({"analysis_id": "a1", "rating": "good"}))
    first.stop()

    second = make_daemon(**{"storage.data_dir": data})
    # Published straight to the hub, inc-1 was held by no detector: at the restart it is
    # closed (with a note) instead of staying open forever.
    _publish(second, EventType.INCIDENT_OPENED, _scoped(replace(slow, id="inc-4"), "shop", "prod"))
    _open(page, second)
    card = page.locator('#incidents [data-incident-id="inc-4"]')
    card.wait_for()
    text = card.inner_text()
    assert "SEV1" in text and "latency_spike" in text
    assert "p99_latency: observed 45 ms vs baseline 5.7 ms" in text
    assert "detected 3 min ago" in text
    assert "event time" in (card.locator("time").first.get_attribute("title") or "")
    assert "shop / prod" in text
    before = page.locator('#resolved [data-incident-id="inc-1"]')
    assert "closed at start" in before.inner_text()
    resolved = page.locator('#resolved [data-incident-id="inc-2"]')
    assert "resolved" in resolved.inner_text()
    assert "detected 3 h ago" in resolved.inner_text()
    assert page.locator("#incidents [data-incident-id]").count() == 1
    assert page.inner_text("#open-count") == "1"
    assert page.inner_text("#resolved-count") == "2"
    analysis = page.locator('[data-analysis-id="a1"]')
    assert analysis.locator(".analysis-text").inner_text() == "The orders database is slow."
    assert analysis.get_attribute("data-rated") == "good"
    assert page.inner_text("#stats-text") == "good 1 · bad 0 · corrected 0"
    assert page.inner_text("#status-open") == "open 1"
    # Live messages still arrive after the history, without duplicating it.
    _publish(second, EventType.INCIDENT_OPENED, _now_incident(3, 5, severity=2))
    page.wait_for_selector('#incidents [data-incident-id="inc-3"]')
    assert page.locator('[data-incident-id="inc-4"]').count() == 1
    _no_emoji(page)
    _shot(page, "page-history.png")


def test_filters_hide_what_they_should_and_survive_a_reload(
    daemon: RunningDaemon, page: Any
) -> None:
    """Service, severity, environment and pattern filters hide the other incidents; the
    filters live in the URL; the empty state says when the filters hide everything."""
    _publish(daemon, EventType.INCIDENT_OPENED, _scoped(_now_incident(1, 60), "shop", "prod"))
    _publish(
        daemon,
        EventType.INCIDENT_OPENED,
        _scoped(
            _now_incident(2, 50, severity=4, service="search", pattern=Pattern.LATENCY_DRIFT),
            "shop",
            "staging",
        ),
    )
    _open(page, daemon)
    page.wait_for_selector('[data-incident-id="inc-2"]')
    visible = "#incidents [data-incident-id]:not([hidden])"
    assert page.locator(visible).count() == 2

    page.select_option("#f-service", "search")
    assert page.eval_on_selector_all(visible, "els => els.map(e => e.dataset.incidentId)") == [
        "inc-2"
    ]
    assert "service=search" in page.url
    assert "1 incident hidden by 1 filter" in page.inner_text("#filter-summary")
    page.reload()
    page.wait_for_selector("#conn.live")
    page.wait_for_selector('[data-incident-id="inc-1"]', state="attached")
    assert page.input_value("#f-service") == "search"
    assert page.locator(visible).count() == 1

    page.click("#f-clear")
    page.select_option("#f-severity", "2")  # SEV1–2: the SEV4 goes
    assert page.eval_on_selector_all(visible, "els => els.map(e => e.dataset.incidentId)") == [
        "inc-1"
    ]
    page.click("#f-clear")
    page.select_option("#f-environment", "staging")
    assert page.locator(visible).count() == 1
    page.select_option("#f-pattern", "error_burst")
    assert page.locator(visible).count() == 0
    assert "No open incident matches these filters" in page.inner_text("#empty-state")
    _shot(page, "page-filters.png")


def test_incident_view_chart_waterfall_and_trace_links(
    make_daemon: Callable[..., RunningDaemon], page: Any
) -> None:
    """Selecting an incident shows observed against baseline (from the detector's series, or
    from the incident's updates), its critical path and links to the tracing backend."""
    daemon = make_daemon(**{"publish.trace_url": TEMPO})
    path = (
        PathStep("frontend", "POST /checkout", "server", 812.4),
        PathStep("checkout", "POST /checkout", "server", 790.0),
        PathStep("payments", "POST /charge", "client", 701.5, "error"),
    )
    base = replace(_now_incident(1, 120, severity=1), critical_path=path)
    now = time.time_ns()
    series = [
        {"at": rfc3339_ns(now - (12 - i) * 10_000_000_000), "observed": o, "baseline": 0.01}
        for i, o in enumerate([0.01, 0.012, 0.009, 0.01, 0.011, 0.2, 0.35, 0.42, 0.4, 0.41])
    ]
    _publish(daemon, EventType.INCIDENT_OPENED, {**base.to_dict(), "series": series})
    # one without a series: the chart is drawn from its opened and updated messages
    plain = _now_incident(2, 100, severity=2, service="search")
    _publish(daemon, EventType.INCIDENT_OPENED, plain)

    _open(page, daemon, "?incident=inc-1")
    page.wait_for_selector('#detail[data-incident-id="inc-1"] svg.chart polyline.observed')
    points = page.get_attribute("#detail polyline.observed", "points") or ""
    assert len(points.split()) == 10
    assert page.locator("#detail polyline.baseline").count() == 1
    assert page.locator("#detail .wf-row").count() == 3
    assert page.locator("#detail .wf-bar.error").count() == 1
    assert "812 ms" in page.inner_text("#detail .waterfall")
    link = page.locator("#detail a.trace-link").first
    assert link.get_attribute("href") == (
        "https://tempo.example/trace/5b8efff798038103d269b633813fc60c"
    )
    assert link.get_attribute("rel") == "noopener noreferrer"
    _shot(page, "incident-detail.png")

    for n, observed in ((1, 0.3), (2, 0.5)):
        later = replace(plain, evidence=Evidence("error_rate", observed, 0.01, "ratio"))
        daemon.daemon.hub.publish(
            Event(
                str(EventType.INCIDENT_UPDATED),
                {"incident": {**later.to_dict(), "detected_at": rfc3339_ns(now + n * 10**10)}},
            )
        )
    page.click('[data-incident-id="inc-2"]')
    page.wait_for_selector('#detail[data-incident-id="inc-2"] polyline.observed')
    assert len((page.get_attribute("#detail polyline.observed", "points") or "").split()) == 3
    assert "incident=inc-2" in page.url


def test_header_and_empty_state_tell_no_traffic_from_quiet_traffic(
    daemon: RunningDaemon, page: Any
) -> None:
    """With no spans the page says so; with spans and no incident it says all is quiet and
    shows the ingest rate and the keys."""
    _open(page, daemon)
    page.wait_for_function(
        "document.getElementById('empty-state').textContent.includes('No spans received yet')"
    )
    assert f"OTLP/gRPC 127.0.0.1:{daemon.daemon.grpc_port}" in page.inner_text("#empty-state")
    _shot(page, "page-empty.png")

    from tests.otlp_client import grpc_export
    from tests.otlp_payloads import many_spans

    body = many_spans(300).SerializeToString()
    for _ in range(3):
        assert grpc_export(daemon.grpc_target, body).code.name == "OK"
        time.sleep(1.0)
    page.reload()
    page.wait_for_selector("#conn.live")
    page.wait_for_function(
        "document.getElementById('empty-state').textContent.includes('All quiet')"
    )
    assert "spans/s" in page.inner_text("#status-ingest")
    assert page.inner_text("#status-ingest") != "ingest 0 spans/s"
    assert "keys" in page.inner_text("#status-keys")
    assert "late" in page.inner_text("#status-late")


def _no_emoji(page: Any) -> None:
    """Nothing on the page needs an emoji font (pictographs, dingbats, symbols)."""
    text = page.evaluate("document.body.innerText + document.title")
    odd = {c for c in text if ord(c) >= 0x1F000 or 0x2600 <= ord(c) <= 0x27BF}
    assert not odd, odd


def test_older_resolved_incidents_page_in(daemon: RunningDaemon, page: Any) -> None:
    """The page loads the 100 latest resolved incidents; the rest come a page at a time."""
    for n in range(105):
        inc = _now_incident(n, 3600 - n)
        _publish(
            daemon, EventType.INCIDENT_RESOLVED, replace(inc, resolved_at_ns=inc.detected_at_ns + 1)
        )
    daemon.daemon.store.flush()
    _open(page, daemon)
    page.wait_for_selector("#load-older:not([hidden])")
    assert page.locator("#resolved [data-incident-id]").count() == 100
    page.click("#load-older")
    page.wait_for_selector("#load-older[hidden]", state="attached")
    assert page.locator("#resolved [data-incident-id]").count() == 105
    assert page.inner_text("#resolved-count") == "105"
