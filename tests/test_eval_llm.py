"""``spanwatch eval llm`` end to end: the facts-only summary and a model behind the
Ollama-protocol server, on a simulated fault and a rated analysis, scores into a report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spanwatch.analyze import Redactor, build_prompt
from spanwatch.analyze import _evaluate as ev
from spanwatch.analyze.testing import OllamaServer
from spanwatch.cli import main
from spanwatch.model import Event, EventType
from tests.conftest import RunningDaemon
from tests.events import incident

# simulating a fault through the detector takes a few seconds of CPU per case
pytestmark = pytest.mark.timeout(300)

ANSWER = [
    "Root cause: payments · POST /charge\n",
    "Evidence: 42% of calls fail against a baseline of 1%.\n",
    "Hypotheses: none\nNext steps:\n- read the payments errors\n",
    "Confidence: high\n",
]
CORRECTION = (
    "Root cause: payments · POST /charge, its connection pool is exhausted\n"
    "Evidence: 42% of calls fail against a baseline of 1%.\nHypotheses: none\n"
    "Next steps:\n- raise the pool size\nConfidence: high"
)


def seed_record() -> dict[str, Any]:
    inc = incident(1).to_dict()
    prompt = build_prompt([inc], 3000, Redactor())
    return {
        "prompt": prompt.user,
        "completion": CORRECTION,
        "original_completion": "It is fine.",
        "rating": "bad",
        "system": prompt.system,
        "analysis_id": "an-rated",
        "incidents": [inc],
    }


def test_eval_llm_scores_the_facts_only_summary_and_an_ollama_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same cases for both; structure, grounding, root cause and ROUGE-L land in the report."""
    rated = tmp_path / "held-out.jsonl"
    rated.write_text(json.dumps(seed_record()) + "\n")
    report = tmp_path / "train_report.json"
    report.write_text(json.dumps({"steps": 3}))
    server = OllamaServer([("ok", ANSWER)])
    try:
        code = main(
            [
                "eval",
                "llm",
                "--facts-only",
                "--model",
                "llama3.2:1b",
                "--host",
                server.host,
                "--sim",
                "1",
                "--patterns",
                "error_burst",
                "--rated",
                str(rated),
                "--report",
                str(report),
                "--rows",
                str(tmp_path / "rows.jsonl"),
            ]
        )
    finally:
        server.close()
    assert code == 0
    out = capsys.readouterr().out
    assert "grounding passed" in out and "llama3.2:1b" in out
    assert len(server.requests) == 2  # one simulated fault, one rated analysis
    assert all(r["options"]["temperature"] == 0 for r in server.requests)
    assert server.requests[1]["messages"][1]["content"] == seed_record()["prompt"]
    written = json.loads(report.read_text())
    assert written["steps"] == 3  # what was there stays
    scores = written["eval_llm"]
    assert scores["cases"] == {"total": 2, "sim": 1, "rated": 1}
    facts, model = scores["models"]["facts-only"], scores["models"]["llama3.2:1b"]
    assert facts["structure_valid"] == 1.0 and facts["grounding_pass_rate"] == 1.0
    assert facts["root_cause_accuracy"] == 1.0 and facts["root_cause_cases"] == 2
    assert model["structure_valid"] == 1.0
    assert model["by_source"]["rated"]["root_cause_accuracy"] == 1.0
    assert model["agreement_cases"] == 1 and 0.3 < model["agreement_rouge_l"] < 1.0
    assert facts["agreement_rouge_l"] < model["agreement_rouge_l"]  # the answer is nearer
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} == {"facts-only", "llama3.2:1b"} and len(rows) == 4


def test_a_free_text_answer_scores_zero_on_structure() -> None:
    """A model that ignores the parts is scored invalid and ungrounded, not failed."""
    case = ev.case_from_record(seed_record())
    result = ev.evaluate([case], lambda c: "The payments service is slow.", "free")
    assert result["structure_valid"] == 0.0 and result["grounding_pass_rate"] == 0.0
    assert result["root_cause_accuracy"] == 0.0 and result["errors"] == 0


def test_a_model_that_fails_is_counted_as_an_error() -> None:
    """An unreachable model: every case an error, the run still reports."""
    case = ev.case_from_record(seed_record())
    result = ev.evaluate([case], ev.ollama("http://127.0.0.1:9", "m", timeout=5), "gone")
    assert result["errors"] == 1 and result["structure_valid"] == 0.0
    assert "LLMUnavailable" in result["rows"][0]["error"]


def test_eval_llm_reads_the_ratings_held_out_by_date_from_the_daemon(
    make_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """--since DATE takes the analyses rated since then through the daemon's export."""
    d = make_daemon(**{"analysis.enabled": False, "analysis.batch_window": "200ms"})
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1)))
    deadline = time.monotonic() + 20
    while not [a for a in d.daemon.store.analyses() if a["status"] == "completed"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (analysis,) = d.daemon.store.analyses()
    d.call(
        d.daemon.ratings.rate(
            {"analysis_id": analysis["analysis_id"], "rating": "bad", "correction": CORRECTION}
        )
    )
    report = tmp_path / "report.json"
    args = ["--api", d.http_url, "eval", "llm", "--facts-only", "--sim", "0"]
    assert main([*args, "--since", "2000-01-01", "--report", str(report)]) == 0
    facts = json.loads(report.read_text())["eval_llm"]["models"]["facts-only"]
    assert facts["cases"] == 1 and facts["by_source"]["rated"]["cases"] == 1
    assert facts["root_cause_accuracy"] == 1.0  # the correction names payments · POST /charge
    assert 0 < facts["agreement_rouge_l"] < 1
    assert main([*args, "--since", "2999-01-01"]) == 1  # nothing rated since then
