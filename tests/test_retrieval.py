"""Corrections reused at once: a rated analysis is shown, fenced, in the prompt of the next
similar incident, through a running daemon and the Ollama-protocol server."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from spanwatch.analyze import FENCE_CLOSE, FENCE_OPEN, Redactor, build_prompt
from spanwatch.analyze.testing import OllamaServer
from spanwatch.model import Event, EventType, Operation, Pattern
from spanwatch.store import Store
from tests.conftest import RunningDaemon
from tests.events import incident

ANSWER = ["Root cause: payments · POST /charge\n", "Evidence: errors.\n"]
CORRECTION = (
    "Root cause: payments · POST /charge, its connection pool to the database is exhausted\n"
    "Evidence: error rate 42% against a baseline of 1%.\nHypotheses: none\n"
    "Next steps:\n- raise the pool size\nConfidence: high"
)


def _completed(d: RunningDaemon, count: int, within: float = 20) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    while True:
        done = [a for a in d.daemon.store.analyses() if a["status"] == "completed"]
        if len(done) >= count:
            return sorted(done, key=lambda a: a["started_at"])  # type: ignore[arg-type, return-value]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _publish(d: RunningDaemon, n: int) -> None:
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(n)))


def test_a_correction_shows_up_in_the_next_similar_prompt(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """Rated bad with a correction on inc-1; inc-2 (same pattern and root cause) is prompted
    with that correction, fenced; inc-3 (another pattern, service and root cause) is not."""
    server = OllamaServer([("ok", ANSWER)])
    try:
        d = make_daemon(**{"llm.host": server.host, "analysis.batch_window": "200ms"})
        _publish(d, 1)
        (first,) = _completed(d, 1)
        d.call(
            d.daemon.ratings.rate(
                {"analysis_id": first["analysis_id"], "rating": "bad", "correction": CORRECTION}
            )
        )
        _publish(d, 2)
        _completed(d, 2)
        inc3 = dataclasses.replace(
            incident(3, service="search", pattern=Pattern.LATENCY_SPIKE),
            root_cause=Operation("search-index", "GET /q"),
            services=("search", "search-index"),
        )
        d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, inc3))
        third = _completed(d, 3)[-1]
    finally:
        server.close()
    first_user = server.requests[0]["messages"][1]["content"]
    second_user = server.requests[1]["messages"][1]["content"]
    third_user = server.requests[2]["messages"][1]["content"]
    assert "corrected by an operator" not in first_user
    assert "its connection pool to the database is exhausted" in second_user
    example = second_user[: second_user.index("incident(s) were detected")]
    assert "corrected by an operator" in example
    inside = example[example.index(FENCE_OPEN) : example.index(FENCE_CLOSE)]
    assert "connection pool" in inside  # the correction sits inside the data fence
    assert "connection pool" not in third_user
    second = d.daemon.store.analysis(_completed(d, 3)[1]["analysis_id"])  # type: ignore[arg-type]
    assert second["example_ids"] == [first["analysis_id"]]
    assert "connection pool" in second["prompt"]["user"]  # kept with the prompt, for training
    assert d.daemon.store.analysis(third["analysis_id"])["example_ids"] == []  # type: ignore[arg-type]


def test_the_best_match_comes_first_and_a_correction_beats_a_good_rating(
    tmp_path: Path,
) -> None:
    """Same signature over same pattern only; among equals, the correction first."""
    store = Store(tmp_path / "db.sqlite")
    specs = [
        ("a-pattern", incident(1, service="search"), "good", ""),
        ("a-good", incident(2), "good", ""),
        ("a-fixed", incident(3), "bad", "Root cause: payments · POST /charge, the pool"),
        ("a-bare", incident(4), "bad", ""),  # nothing to teach: never an example
    ]
    for analysis_id, inc, rating, correction in specs:
        if analysis_id == "a-pattern":
            inc = dataclasses.replace(inc, root_cause=Operation("search", "GET /q"))
        store({"type": "incident.opened", "incident": inc.to_dict()})
        store(
            {
                "type": "analysis.started",
                "analysis_id": analysis_id,
                "incident_ids": [inc.id],
                "model": "m",
            }
        )
        store(
            {
                "type": "analysis.completed",
                "analysis_id": analysis_id,
                "incident_ids": [inc.id],
                "text": f"text of {analysis_id}",
                "model": "m",
                "prompt": {"system": "s", "user": analysis_id},
            }
        )
        store.record_rating(analysis_id, rating, correction, "t")  # type: ignore[arg-type]
    found = store.similar([incident(9).to_dict()], limit=5)
    assert [f["analysis_id"] for f in found] == ["a-fixed", "a-good", "a-pattern"]
    assert found[0]["answer"].endswith("the pool") and found[0]["corrected"] is True
    assert found[1]["answer"] == "text of a-good"
    store.close()


def test_examples_stay_within_the_token_budget() -> None:
    """Examples take at most a third of the budget; the incidents still go in full."""
    example = {"analysis_id": "a1", "incidents": [incident(1).to_dict()], "answer": "x" * 1400}
    roomy = build_prompt([incident(2).to_dict()], 3000, Redactor(), [example, example])
    assert roomy.example_ids == ("a1", "a1")
    tight = build_prompt([incident(2).to_dict()], 1000, Redactor(), [example])
    assert tight.example_ids == () and "Incident 1 of 1" in tight.user
    assert roomy.estimated_tokens <= 3000


def test_an_analysis_goes_on_when_the_examples_cannot_be_read() -> None:
    """A store that fails to answer leaves the prompt without examples, nothing more."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from spanwatch.analyze import AnalysisStage
    from spanwatch.config import load
    from spanwatch.model import Event as Ev

    def broken(incidents: list[dict[str, object]], limit: int) -> list[dict[str, object]]:
        raise OSError("database is locked")

    events: list[Ev] = []
    config = load(env={}, overrides={"analysis.enabled": False, "analysis.batch_window": "50ms"})

    async def scenario() -> None:
        stage = AnalysisStage(config, events.append, CollectorRegistry(), similar=broken)
        stage.start()
        stage({"type": "incident.opened", "incident": incident(1).to_dict()})
        for _ in range(200):
            if any(e.type == "analysis.completed" for e in events):
                break
            await asyncio.sleep(0.02)
        await stage.stop()

    asyncio.run(scenario())
    done = [e for e in events if e.type == "analysis.completed"]
    assert done and done[0].fields["example_ids"] == []
    assert done[0].fields["grounding"]["passed"] is True
