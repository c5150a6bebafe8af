"""The live page in headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spanwatch.model import Event, EventType, Pattern
from tests.conftest import RunningDaemon
from tests.events import analysis_events, incident, opened
from tests.tools import browser_page

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


@pytest.fixture
def page() -> Iterator[Any]:
    with browser_page() as page:
        yield page


def test_incidents_tokens_and_a_bad_rating_with_correction(
    daemon: RunningDaemon, page: Any
) -> None:
    """An incident appears, tokens stream in, a Bad rating with a correction reaches the daemon."""
    hub = daemon.daemon.hub
    page.goto(f"http://127.0.0.1:{daemon.daemon.ws.port}/")
    page.wait_for_selector("#conn.live")

    hostile = incident(1, severity=1, service="checkout<script>alert(1)</script>")
    hub.publish(Event.incident(EventType.INCIDENT_OPENED, hostile))
    hub.publish(opened(2, severity=4, service="search", pattern=Pattern.LATENCY_DRIFT))
    card = page.wait_for_selector('[data-incident-id="inc-1"]')
    assert "SEV1" in card.inner_text()
    assert "checkout<script>alert(1)</script>" in card.inner_text()  # shown as text, not run
    assert page.locator("[data-incident-id] script").count() == 0
    assert "sev1" in (card.get_attribute("class") or "")
    assert "error_rate: observed 42% vs baseline 1.0%" in card.inner_text()

    started, *tokens, completed = analysis_events(
        "a1", ["inc-1"], ["The ", "payments ", "service ", "<b>timed</b> ", "out."]
    )
    hub.publish(started)
    text = page.locator('[data-analysis-id="a1"] .analysis-text')
    for i, token in enumerate(tokens):
        hub.publish(token)
        expected = "".join(t.fields["text"] for t in tokens[: i + 1])
        page.wait_for_function(
            "([sel, want]) => document.querySelector(sel)?.textContent === want",
            arg=['[data-analysis-id="a1"] .analysis-text', expected],
        )
    assert page.locator('[data-analysis-id="a1"] .analysis-text b').count() == 0
    assert page.locator('[data-analysis-id="a1"] .rate-bad').is_disabled()
    hub.publish(completed)
    page.wait_for_selector('[data-analysis-id="a1"].completed')
    assert text.inner_text() == "The payments service <b>timed</b> out."

    page.click('[data-analysis-id="a1"] .rate-bad')
    page.wait_for_selector("#correction-dialog[open]")
    correction = "The payments database ran out of connections; checkout only failed because of it."
    page.fill("#correction-text", correction)
    page.click("#correction-send")
    page.wait_for_selector('[data-analysis-id="a1"][data-rated="bad"]')
    assert "rated bad, with a correction" in page.inner_text('[data-analysis-id="a1"] .rated')
    page.wait_for_function("document.getElementById('stats-text').textContent.includes('bad 1')")

    recorded = [m for m in hub.recent("rating.") if m["analysis_id"] == "a1"]
    assert len(recorded) == 1
    assert recorded[0]["rating"]["rating"] == "bad"
    assert recorded[0]["rating"]["correction"] == correction
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)


def test_page_reconnects_and_resumes_without_duplicates(daemon: RunningDaemon, page: Any) -> None:
    """When the connection drops, the page reconnects with ?since= and misses nothing."""
    hub = daemon.daemon.hub
    page.goto(f"http://127.0.0.1:{daemon.daemon.ws.port}/")
    page.wait_for_selector("#conn.live")
    hub.publish(opened(1))
    page.wait_for_selector('[data-incident-id="inc-1"]')

    async def drop_connections() -> None:
        server = daemon.daemon.ws._server
        assert server is not None
        for connection in list(server.connections):
            await connection.close(1012, "restarting")

    daemon.call(drop_connections())
    page.wait_for_selector("#conn:not(.live)")
    for n in range(2, 6):  # published while the page is away
        hub.publish(opened(n))
    page.wait_for_selector("#conn.live", timeout=15_000)
    deadline = time.monotonic() + 10
    while page.locator("[data-incident-id]").count() < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ids = page.eval_on_selector_all(
        "[data-incident-id]", "els => els.map(e => e.dataset.incidentId)"
    )
    assert sorted(ids) == ["inc-1", "inc-2", "inc-3", "inc-4", "inc-5"]
