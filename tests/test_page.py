"""The live page in headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spanwatch.analyze.testing import OllamaServer
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


GROUNDED = [
    "Root cause: payments · POST /charge\n",
    "Evidence: payments fails 42% of its calls against a baseline of 1%, ",
    "and checkout POST /checkout fails with it.\n",
    "Hypotheses: the payments connection pool may be exhausted.\n",
    "Next steps:\n- read the payments errors from the start time\n",
    "- check the payments pool, then its database\n",
    "Confidence: high\n",
]
NOT_GROUNDED = [
    "Root cause: orders-db · SELECT orders\n",
    "Evidence: orders-db answers in 900 ms; checkout POST /checkout fails 42% of the time.\n",
    "Hypotheses: the orders-db connection pool is exhausted.\n",
    "Next steps:\n- restart orders-db\n",
    "Confidence: low\n",
]


def test_each_analysis_shows_its_grounding(
    make_daemon: Callable[..., RunningDaemon], page: Any
) -> None:
    """Next to each model answer: grounded or not, the failed checks (the answer itself still
    shown), the root cause against the detector's and the confidence; live and after a reload."""
    ollama = OllamaServer([("ok", GROUNDED), ("ok", NOT_GROUNDED)])
    try:
        d = make_daemon(**{"llm.host": ollama.host, "analysis.batch_window": "200ms"})
        hub = d.daemon.hub
        page.goto(f"http://127.0.0.1:{d.daemon.ws.port}/")
        page.wait_for_selector("#conn.live")
        # One at a time, so that each is its own batch and gets its own answer.
        hub.publish(opened(1, severity=2))
        page.wait_for_selector(".analysis.completed")
        hub.publish(opened(2, severity=1))
        page.wait_for_selector(".analysis.completed >> nth=1")
        completed = {m["grounding"]["passed"]: m for m in hub.recent("analysis.completed")}
        good, bad = completed[True]["analysis_id"], completed[False]["analysis_id"]

        def check(reloaded: bool) -> None:
            ok = page.locator(f'[data-analysis-id="{good}"]')
            assert ok.get_attribute("data-grounded") == "true"
            assert ok.locator(".badge.grounded").inner_text() == "grounded"
            box = ok.locator(".grounding").inner_text()
            assert "Grounded: passed every check" in box
            assert "root cause agrees with the detector's" in box
            assert "confidence high" in box
            assert ok.locator(".grounding .problems li").count() == 0
            assert ok.locator(".analysis-text").inner_text().strip() == "".join(GROUNDED).strip()

            failed = page.locator(f'[data-analysis-id="{bad}"]')
            assert failed.get_attribute("data-grounded") == "false"
            assert failed.locator(".badge.not-grounded").inner_text() == "not grounded"
            box = failed.locator(".grounding").inner_text()
            assert "Not grounded: failed its checks" in box
            assert "root cause differs from the detector's, with no reason given" in box
            assert "confidence low" in box
            problems = failed.locator(".grounding .problems li").all_inner_texts()
            assert problems == completed[False]["grounding"]["problems"]
            assert "services not in the incident: orders-db" in problems
            assert "numbers not in the evidence: 900ms" in problems
            # never hidden: the answer is shown as written, and can be rated
            assert failed.is_visible()
            assert "orders-db answers in 900 ms" in failed.locator(".analysis-text").inner_text()
            assert failed.locator(".rate-bad").is_enabled()
            text = page.evaluate("document.body.innerText")
            assert not {c for c in text if ord(c) >= 0x1F000 or 0x2600 <= ord(c) <= 0x27BF}
            if not reloaded:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "page-grounding.png"), full_page=True)

        check(reloaded=False)
        d.daemon.store.flush()
        page.reload()  # from the store this time
        page.wait_for_selector("#conn.live")
        page.wait_for_selector(".analysis.completed >> nth=1")
        check(reloaded=True)
    finally:
        ollama.close()
