"""The store's incident history: listing, orphans at a restart, the migration to version 2."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from spanwatch.model import Event, EventType
from spanwatch.store import Store
from spanwatch.store._sqlite import MIGRATIONS
from tests.events import incident


def _message(n: int, kind: EventType = EventType.INCIDENT_OPENED) -> dict[str, object]:
    event = Event.incident(kind, incident(n))
    return {"type": event.type, "seq": n, **event.fields}


def test_orphans_are_closed_with_a_note(tmp_path: Path) -> None:
    """Open incidents no detector holds become resolved with a note; held ones stay open."""
    store = Store(tmp_path / "db.sqlite")
    for n in (1, 2, 3):
        store(_message(n))
    assert store.close_orphans({"inc-2"}, "closed at start") == 2
    found, _ = store.incidents()
    by_id = {i["id"]: i for i in found}
    assert by_id["inc-2"]["status"] == "open"
    for n in (1, 3):
        assert by_id[f"inc-{n}"]["status"] == "resolved"
        assert by_id[f"inc-{n}"]["note"] == "closed at start"
        assert by_id[f"inc-{n}"]["resolved_at"].endswith("Z")
    assert store.incident_counts() == {"open": 1, "resolved": 2}
    assert store.close_orphans({"inc-2"}, "again") == 0
    store.close()


def test_a_version_1_database_is_migrated_with_its_incidents(tmp_path: Path) -> None:
    """A database made by the first schema gets the incident indexes and keeps its rows."""
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    body = incident(7).to_dict()
    db.execute(
        "INSERT INTO incidents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "inc-7",
            2,
            "error_burst",
            "checkout",
            "POST /checkout",
            "payments",
            "POST /charge",
            "open",
            body["started_at"],
            body["detected_at"],
            None,
            json.dumps(body),
            0.0,
        ),
    )
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 2
    found, cursor = store.incidents(service="payments")
    assert [i["id"] for i in found] == ["inc-7"] and cursor is None
    indexes = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert {"incidents_by_detection", "incidents_by_status"} <= indexes
    store.close()
