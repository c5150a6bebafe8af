"""The SQLite store and the export formats, without a daemon."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from spanwatch.analyze import Redactor
from spanwatch.model import RatingValue, UnknownAnalysis
from spanwatch.store import Store, export_records, split
from spanwatch.store._sqlite import MIGRATIONS
from tests.events import incident


def _analysis(
    store: Store,
    analysis_id: str,
    user: str,
    text: str,
    fallback: bool = False,
    system: str = "You analyse incidents.",
) -> None:
    inc = incident(1).to_dict()
    store({"type": "incident.opened", "incident": inc})
    store(
        {
            "type": "analysis.started",
            "analysis_id": analysis_id,
            "incident_ids": [inc["id"]],
            "model": "llama3.2:1b",
            "fallback": fallback,
        }
    )
    store(
        {
            "type": "analysis.completed",
            "analysis_id": analysis_id,
            "incident_ids": [inc["id"]],
            "text": text,
            "model": "" if fallback else "llama3.2:1b",
            "fallback": fallback,
            "prompt": {"system": system, "user": user},
            "counters": {"eval_count": 3},
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "spanwatch.db", redact=Redactor().redact)
    _analysis(s, "a-good", "prompt one", "model text one")
    _analysis(s, "a-bad", "prompt two", "model text two")
    _analysis(s, "a-bad-bare", "prompt three", "model text three")
    _analysis(s, "a-changed", "prompt four", "model text four")
    _analysis(s, "a-dup-old", "prompt five", "older text five")
    _analysis(s, "a-dup-new", "prompt five", "newer text five")
    _analysis(s, "a-facts", "prompt six", "facts only", fallback=True)
    s.record_rating("a-good", RatingValue.GOOD, "", "t")
    s.record_rating("a-bad", RatingValue.BAD, "The database ran out of connections.", "t")
    s.record_rating("a-bad-bare", RatingValue.BAD, "", "t")
    s.record_rating("a-changed", RatingValue.BAD, "first thought", "t")
    s.record_rating("a-changed", RatingValue.GOOD, "", "t")  # the latest rating wins
    s.record_rating("a-dup-old", RatingValue.GOOD, "", "t")
    s.record_rating("a-dup-new", RatingValue.BAD, "a better five", "t")
    s.record_rating("a-facts", RatingValue.GOOD, "", "t")
    return s


def test_schema_is_versioned_and_migrated_once(tmp_path: Path) -> None:
    """A new database gets every migration; reopening it changes nothing."""
    path = tmp_path / "db.sqlite"
    Store(path).close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    reopened = Store(path)
    assert reopened.schema_version == len(MIGRATIONS)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_unknown_or_unfinished_analyses_cannot_be_rated(store: Store) -> None:
    """Rating an id the store does not have, or one still running, is UnknownAnalysis."""
    with pytest.raises(UnknownAnalysis, match="'nope'"):
        store.record_rating("nope", RatingValue.GOOD, "", "t")
    store(
        {
            "type": "analysis.started",
            "analysis_id": "running",
            "incident_ids": [],
            "model": "m",
            "fallback": False,
        }
    )
    with pytest.raises(UnknownAnalysis):
        store.record_rating("running", RatingValue.GOOD, "", "t")


def test_stats_count_the_latest_rating_per_analysis(store: Store) -> None:
    """Totals, per pattern and per model, from each analysis's latest rating."""
    s = store.stats()
    assert s["ratings"] == 8 and s["rated"] == 7
    assert (s["good"], s["bad"], s["corrected"]) == (4, 3, 2)
    assert s["by_model"]["facts-only summary"] == {"rated": 1, "good": 1, "bad": 0, "corrected": 0}
    assert s["by_model"]["llama3.2:1b"]["rated"] == 6
    assert s["by_pattern"]["error_burst"]["rated"] == 7


def _lines(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [json.loads(json.dumps(r)) for r in records]  # each is one valid JSON line


def test_seed_format(store: Store) -> None:
    """seed: the correction for bad, the model's text for good; bare bad ratings left out."""
    records = _lines(export_records(store.rated(), "seed"))
    by_prompt = {r["prompt"]: r for r in records}
    assert set(by_prompt) == {"prompt one", "prompt two", "prompt four", "prompt five"}
    for r in records:
        assert {"prompt", "completion", "original_completion", "rating"} <= set(r)
    assert by_prompt["prompt one"]["completion"] == "model text one"
    assert by_prompt["prompt two"]["completion"] == "The database ran out of connections."
    assert by_prompt["prompt two"]["original_completion"] == "model text two"
    assert by_prompt["prompt four"]["rating"] == "good"  # the later rating replaced the first
    assert by_prompt["prompt five"]["completion"] == "a better five"  # the newest duplicate


def test_chat_alpaca_and_dpo_formats(store: Store) -> None:
    """chat: system/user/assistant; alpaca: instruction/input/output; dpo: corrected pairs."""
    rated = store.rated()
    for record in _lines(export_records(rated, "chat")):
        roles = [m["role"] for m in record["messages"]]  # type: ignore[index, union-attr]
        assert roles == ["system", "user", "assistant"]
    chat = {
        r["messages"][1]["content"]: r["messages"][2]["content"]  # type: ignore[index]
        for r in export_records(rated, "chat")
    }
    assert chat["prompt two"] == "The database ran out of connections."
    alpaca = export_records(rated, "alpaca")
    assert all({"instruction", "input", "output"} <= set(r) for r in alpaca)
    assert {r["input"]: r["output"] for r in alpaca}["prompt one"] == "model text one"
    dpo = _lines(export_records(rated, "dpo"))
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in dpo} == {
        ("prompt two", "The database ran out of connections.", "model text two"),
        ("prompt five", "a better five", "newer text five"),
    }


def test_exports_and_corrections_are_redacted(tmp_path: Path) -> None:
    """A secret typed into a correction or left in a prompt never leaves the store."""
    s = Store(tmp_path / "db", redact=Redactor().redact)
    _analysis(s, "a", "call postgres://app:hunter2@db/orders", "text")
    s.record_rating("a", RatingValue.BAD, "token=abc123secret and mail ops@example.com", "t")
    dumped = json.dumps([export_records(s.rated(), f) for f in ("seed", "chat", "dpo")])
    assert "hunter2" not in dumped and "abc123secret" not in dumped
    assert "ops@example.com" not in dumped
    raw = sqlite3.connect(tmp_path / "db").execute("SELECT correction FROM ratings").fetchone()[0]
    assert "abc123secret" not in raw


def test_validation_split_is_deterministic() -> None:
    """The same records always split the same way, about in the asked proportion."""
    records = [{"prompt": f"p{n}", "completion": "c"} for n in range(400)]
    train, val = split(records, 0.25)
    assert (train, val) == split(records, 0.25)
    assert len(train) + len(val) == 400 and 60 < len(val) < 140
    with pytest.raises(ValueError):
        split(records, 1.5)
