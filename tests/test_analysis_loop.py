"""The loop without Ollama: a facts-only summary that an operator corrected is exported as a
training example (the prompt the model would have had, the correction as the answer), marked."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spanwatch.model import Event, EventType
from spanwatch.training import load_examples
from tests.conftest import RunningDaemon
from tests.events import incident

CORRECTION = (
    "Root cause: payments · POST /charge, its database connection pool is exhausted\n"
    "Evidence: error rate 42% against 1%.\nHypotheses: none\nNext steps:\n- raise the pool\n"
    "Confidence: high"
)


def _export(d: RunningDaemon, fmt: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{d.http_url}/api/training/export?format={fmt}") as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line]


def _fallback_analysis(d: RunningDaemon, n: int) -> dict[str, Any]:
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(n)))
    deadline = time.monotonic() + 20
    while True:
        done = [a for a in d.daemon.store.analyses() if a["status"] == "completed"]
        if len(done) >= n:
            return d.daemon.store.analysis(max(done, key=lambda a: a["started_at"])["analysis_id"])
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_corrected_facts_only_summary_is_a_training_example(
    make_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """--no-llm, rate bad with a correction, export: one record per format but dpo, marked."""
    d = make_daemon(**{"analysis.enabled": False, "analysis.batch_window": "200ms"})
    first = _fallback_analysis(d, 1)
    assert first["fallback"] is True
    assert _export(d, "seed") == []  # not rated yet
    d.call(
        d.daemon.ratings.rate(
            {"analysis_id": first["analysis_id"], "rating": "bad", "correction": CORRECTION}
        )
    )
    (seed,) = _export(d, "seed")
    assert seed["fallback"] is True and seed["rating"] == "bad"
    assert seed["prompt"] == first["prompt"]["user"]  # what the model would have been given
    assert seed["system"] == first["prompt"]["system"]
    assert seed["completion"] == CORRECTION
    assert seed["original_completion"] == first["text"]
    assert [i["id"] for i in seed["incidents"]] == ["inc-1"]
    (chat,) = _export(d, "chat")
    assert chat["fallback"] is True and chat["messages"][2]["content"] == CORRECTION
    (alpaca,) = _export(d, "alpaca")
    assert alpaca["fallback"] is True and alpaca["output"] == CORRECTION
    assert _export(d, "dpo") == []  # no model wrote the rejected text
    path = tmp_path / "seed.jsonl"
    path.write_text(json.dumps(seed) + "\n")
    (example,) = load_examples(path)
    assert example.corrected and example.answer == CORRECTION
    # and the next similar incident's summary was built from a prompt that shows it
    second = _fallback_analysis(d, 2)
    assert second["example_ids"] == [first["analysis_id"]]
    assert "database connection pool is exhausted" in second["prompt"]["user"]


def test_a_good_facts_only_summary_is_not_exported(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """Rated good, the summary has nothing a model should learn: it is left out."""
    d = make_daemon(**{"analysis.enabled": False, "analysis.batch_window": "200ms"})
    first = _fallback_analysis(d, 1)
    d.call(d.daemon.ratings.rate({"analysis_id": first["analysis_id"], "rating": "good"}))
    assert _export(d, "seed") == [] and _export(d, "chat") == []
