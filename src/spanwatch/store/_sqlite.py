"""SQLite in the data directory: incidents, analyses (with their exact prompts) and ratings.

WAL mode, ``synchronous=FULL``: a rating is acknowledged only after its transaction is on disk,
so a ``kill -9`` right after the acknowledgement loses nothing. Incidents and analyses come
from the hub and are written by one writer thread, so the event loop never waits on the disk;
a rating first waits for that writer to catch up, so an analysis just published can be rated.
The schema is versioned with ``PRAGMA user_version`` and migrated forward at open.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from spanwatch.model import Rating, RatingValue, StorageUnavailable, UnknownAnalysis, rfc3339_ns

from . import _similar

Redact = Callable[[str], str]

log = structlog.get_logger("spanwatch.store")

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        severity INTEGER NOT NULL,
        pattern TEXT NOT NULL,
        service TEXT NOT NULL,
        operation TEXT NOT NULL,
        root_service TEXT NOT NULL,
        root_operation TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        detected_at TEXT NOT NULL,
        resolved_at TEXT,
        body TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE analyses (
        id TEXT PRIMARY KEY,
        incident_ids TEXT NOT NULL,
        status TEXT NOT NULL,
        model TEXT NOT NULL,
        fallback INTEGER NOT NULL,
        text TEXT NOT NULL,
        reason TEXT NOT NULL,
        prompt_system TEXT NOT NULL,
        prompt_user TEXT NOT NULL,
        counters TEXT NOT NULL,
        patterns TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE TABLE ratings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        analysis_id TEXT NOT NULL REFERENCES analyses(id),
        rating TEXT NOT NULL CHECK (rating IN ('good', 'bad')),
        correction TEXT NOT NULL,
        rater TEXT NOT NULL,
        rated_at_ns INTEGER NOT NULL
    );
    CREATE INDEX ratings_by_analysis ON ratings(analysis_id, id);
    CREATE INDEX ratings_by_time ON ratings(rated_at_ns);
    """,
    # 2: incidents listed newest first, by state (GET /api/incidents)
    """
    CREATE INDEX incidents_by_detection ON incidents(detected_at DESC, id DESC);
    CREATE INDEX incidents_by_status ON incidents(status, detected_at DESC);
    """,
    # 3: an analysis's parsed answer, its grounding checks and the examples its prompt showed
    """
    ALTER TABLE analyses ADD COLUMN parts TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE analyses ADD COLUMN grounding TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE analyses ADD COLUMN example_ids TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX incidents_by_root ON incidents(root_service, root_operation);
    """,
]

# Filters of Store.incidents(): the column (or JSON field of the body) each one matches.
_INCIDENT_FILTERS = {
    "id": "id",
    "status": "status",
    "service": "service",
    "pattern": "pattern",
    "namespace": "json_extract(body, '$.namespace')",
    "environment": "json_extract(body, '$.environment')",
}


class StoreError(StorageUnavailable):
    """The database cannot be used (a full or read-only disk, a damaged file, a lock held)."""


@dataclass(frozen=True, slots=True)
class RatedAnalysis:
    """An analysis with its latest rating: one export record."""

    analysis_id: str
    system: str
    user: str
    text: str
    model: str
    rating: str
    correction: str
    rated_at_ns: int
    patterns: tuple[str, ...]
    # a facts-only summary (not written by a model) that an operator corrected
    fallback: bool = False
    incidents: tuple[dict[str, Any], ...] = ()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """sqlite3's errors become StoreError at the store's edge."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"cannot {what}: {exc}") from exc


class Store:
    def __init__(
        self, path: Path, redact: Redact = lambda text: text, busy_timeout: float = 5.0
    ) -> None:
        self.path = path
        self._redact = redact
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=busy_timeout
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self.dropped_events = 0
        self._writer = threading.Thread(
            target=self._write_loop, name="spanwatch-store", daemon=True
        )
        self._writer.start()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > version:
                with self._lock:
                    self._db.executescript(
                        f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;"
                    )

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(10)
        with self._lock:
            self._db.close()

    # -- events from the hub (any thread; never blocks) --------------------------------------

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind.startswith("incident.") or kind in (
            "analysis.started",
            "analysis.completed",
            "analysis.failed",
        ):
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                self.dropped_events += 1

    def flush(self) -> None:
        """Wait until every event handed over so far is written."""
        self._queue.join()

    def _write_loop(self) -> None:
        while True:
            message = self._queue.get()
            try:
                if message is None:
                    return
                with self._lock:
                    self._write(message)
            except sqlite3.Error as exc:
                self.dropped_events += 1
                if self.dropped_events == 1 or self.dropped_events % 1000 == 0:
                    log.error(
                        "cannot write to the database",
                        path=str(self.path),
                        error=str(exc),
                        dropped_events=self.dropped_events,
                    )
            finally:
                self._queue.task_done()

    def _write(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        now = time.time()
        if kind.startswith("incident."):
            inc = message["incident"]
            root = inc.get("root_cause") or {}
            self._db.execute(
                "INSERT INTO incidents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO "
                "UPDATE SET severity=excluded.severity, pattern=excluded.pattern, "
                "status=excluded.status, resolved_at=excluded.resolved_at, body=excluded.body, "
                "updated_at=excluded.updated_at",
                (
                    inc["id"],
                    inc["severity"],
                    inc["pattern"],
                    inc["service"],
                    inc["operation"],
                    root.get("service", ""),
                    root.get("operation", ""),
                    inc.get("status", "open"),
                    inc["started_at"],
                    inc["detected_at"],
                    inc.get("resolved_at"),
                    json.dumps(inc),
                    now,
                ),
            )
        elif kind == "analysis.started":
            patterns = [
                r[0]
                for r in self._db.execute(
                    f"SELECT pattern FROM incidents WHERE id IN "
                    f"({','.join('?' * len(message['incident_ids']))})",
                    message["incident_ids"],
                )
            ]
            self._db.execute(
                "INSERT OR IGNORE INTO analyses (id, incident_ids, status, model, fallback, text, "
                "reason, prompt_system, prompt_user, counters, patterns, started_at, finished_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    message["analysis_id"],
                    json.dumps(message["incident_ids"]),
                    "running",
                    message.get("model", ""),
                    int(bool(message.get("fallback"))),
                    "",
                    "",
                    "",
                    "",
                    "{}",
                    json.dumps(sorted(set(patterns))),
                    now,
                    None,
                ),
            )
        else:
            prompt = message.get("prompt") or {}
            self._db.execute(
                "UPDATE analyses SET status=?, text=?, reason=?, model=?, fallback=?, "
                "prompt_system=?, prompt_user=?, counters=?, finished_at=?, parts=?, "
                "grounding=?, example_ids=? WHERE id=?",
                (
                    "completed" if kind == "analysis.completed" else "failed",
                    message.get("text", ""),
                    message.get("reason", ""),
                    message.get("model", ""),
                    int(bool(message.get("fallback"))),
                    prompt.get("system", ""),
                    prompt.get("user", ""),
                    json.dumps(message.get("counters") or {}),
                    now,
                    json.dumps(message.get("parts") or []),
                    json.dumps(message.get("grounding") or {}),
                    json.dumps(message.get("example_ids") or []),
                    message["analysis_id"],
                ),
            )

    # -- ratings -------------------------------------------------------------------------------

    def record_rating(
        self, analysis_id: str, rating: RatingValue, correction: str, rater: str
    ) -> Rating:
        """Store one rating durably; returns it once it is on disk."""
        self.flush()
        rated = Rating(analysis_id, rating, self._redact(correction), time.time_ns(), rater)
        with _translated("record the rating"), self._lock:
            row = self._db.execute(
                "SELECT status FROM analyses WHERE id=?", (analysis_id,)
            ).fetchone()
            if row is None or row[0] != "completed":
                raise UnknownAnalysis(f"no finished analysis with id {analysis_id!r}")
            self._db.execute(
                "INSERT INTO ratings (analysis_id, rating, correction, rater, rated_at_ns) "
                "VALUES (?,?,?,?,?)",
                (analysis_id, str(rating), rated.correction, rater, rated.rated_at_ns),
            )
        return rated

    def stats(self) -> dict[str, Any]:
        """Counts of the latest rating of each analysis: totals, per pattern, per model."""
        self.flush()
        with _translated("read the rating stats"), self._lock:
            rows = self._db.execute(
                "SELECT r.rating, r.correction != '', a.model, a.fallback, a.patterns "
                "FROM ratings r JOIN analyses a ON a.id = r.analysis_id "
                "WHERE r.id = (SELECT MAX(id) FROM ratings WHERE analysis_id = r.analysis_id)"
            ).fetchall()
            total_ratings = self._db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]

        def tally() -> dict[str, int]:
            return {"rated": 0, "good": 0, "bad": 0, "corrected": 0}

        out: dict[str, Any] = {
            **tally(),
            "ratings": total_ratings,
            "by_pattern": {},
            "by_model": {},
        }
        for rating, corrected, model, fallback, patterns in rows:
            buckets = [out]
            model_name = "facts-only summary" if fallback else (model or "unknown")
            buckets.append(out["by_model"].setdefault(model_name, tally()))
            for pattern in json.loads(patterns) or ["unknown"]:
                buckets.append(out["by_pattern"].setdefault(pattern, tally()))
            for bucket in buckets:
                bucket["rated"] += 1
                bucket[rating] += 1
                bucket["corrected"] += int(bool(corrected))
        return out

    def rated(self, since_ns: int = 0) -> list[RatedAnalysis]:
        """Every rated analysis with its latest rating, oldest rating first: the model-written
        ones, and the facts-only summaries that were corrected (``fallback``)."""
        self.flush()
        with _translated("read the ratings"), self._lock:
            rows = self._db.execute(
                "SELECT a.id, a.prompt_system, a.prompt_user, a.text, a.model, r.rating, "
                "r.correction, r.rated_at_ns, a.patterns, a.fallback, "
                "(SELECT json_group_array(json(body)) FROM incidents WHERE id IN "
                "(SELECT value FROM json_each(a.incident_ids))) "
                "FROM ratings r JOIN analyses a ON a.id = r.analysis_id "
                "WHERE r.id = (SELECT MAX(id) FROM ratings WHERE analysis_id = r.analysis_id) "
                "AND r.rated_at_ns >= ? AND (a.fallback = 0 OR (r.rating = 'bad' AND "
                "r.correction != '')) ORDER BY r.rated_at_ns, r.id",
                (since_ns,),
            ).fetchall()
        return [
            RatedAnalysis(
                r[0],
                self._redact(r[1]),
                self._redact(r[2]),
                self._redact(r[3]),
                r[4],
                r[5],
                self._redact(r[6]),
                r[7],
                tuple(json.loads(r[8])),
                bool(r[9]),
                tuple(json.loads(r[10] or "[]")),
            )
            for r in rows
        ]

    def similar(self, incidents: list[dict[str, Any]], limit: int = 2) -> list[dict[str, Any]]:
        """The rated past analyses most like ``incidents`` (see ``_similar``), best first."""
        with _translated("find similar rated analyses"), self._lock:
            found = _similar.similar(self._db, incidents, limit)
        for item in found:
            item["answer"] = self._redact(item["answer"])
        return found

    # -- reading incidents ---------------------------------------------------------------------

    def incidents(
        self,
        *,
        limit: int = 50,
        before: tuple[str, str] | None = None,
        max_severity: int = 5,
        **filters: str,
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """Incidents newest first (by detection), as published; and the cursor of the next page.

        ``filters`` are ``id``, ``status`` (open|resolved), ``service`` (the incident's service, its
        root cause's or one it spans), ``pattern``, ``namespace`` and ``environment``, exact
        matches; ``max_severity=2`` keeps SEV1–2. ``before`` is the cursor a previous page gave.
        """
        self.flush()
        where = ["severity <= ?"]
        args: list[Any] = [max_severity]
        for name, value in filters.items():
            if name not in _INCIDENT_FILTERS:
                raise ValueError(f"unknown incident filter {name!r}")
            if not value:
                continue
            if name == "service":
                where.append(
                    "(service = ? OR root_service = ? OR EXISTS (SELECT 1 FROM "
                    "json_each(incidents.body, '$.services') WHERE value = ?))"
                )
                args += [value, value, value]
            else:
                where.append(f"{_INCIDENT_FILTERS[name]} = ?")
                args.append(value)
        if before is not None:
            where.append("(detected_at < ? OR (detected_at = ? AND id < ?))")
            args += [before[0], before[0], before[1]]
        with _translated("list the incidents"), self._lock:
            rows = self._db.execute(
                f"SELECT body, status, detected_at, id FROM incidents WHERE {' AND '.join(where)} "
                "ORDER BY detected_at DESC, id DESC LIMIT ?",
                [*args, limit + 1],
            ).fetchall()
        out = []
        for body, status, _, _ in rows[:limit]:
            incident = json.loads(body)
            incident["status"] = status
            out.append(incident)
        cursor = (rows[limit - 1][2], rows[limit - 1][3]) if len(rows) > limit else None
        return out, cursor

    def close_orphans(self, held: set[str], note: str) -> int:
        """Mark resolved the incidents open here that no detector holds any more (its state was
        not restored), so they do not stay open forever; returns how many."""
        self.flush()
        now = time.time_ns()
        with _translated("close orphaned incidents"), self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM incidents WHERE status = 'open'"
            ).fetchall()
            orphans = [(i, json.loads(b)) for i, b in rows if i not in held]
            stamp = rfc3339_ns(now)
            for incident_id, body in orphans:
                body.update(status="resolved", resolved_at=stamp, note=note)
                self._db.execute(
                    "UPDATE incidents SET status='resolved', resolved_at=?, body=?, updated_at=? "
                    "WHERE id=?",
                    (stamp, json.dumps(body), now / 1e9, incident_id),
                )
        return len(orphans)

    def incident_counts(self) -> dict[str, int]:
        """How many incidents the store holds, open and resolved."""
        self.flush()
        with _translated("count the incidents"), self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM incidents GROUP BY status")
            counts = {str(k): int(v) for k, v in rows}
        return {"open": counts.get("open", 0), "resolved": counts.get("resolved", 0)}

    # -- reading analyses ----------------------------------------------------------------------

    def analyses(self, limit: int = 50) -> list[dict[str, Any]]:
        self.flush()
        with _translated("list the analyses"), self._lock:
            rows = self._db.execute(
                "SELECT a.id, a.status, a.model, a.fallback, a.incident_ids, a.patterns, "
                "a.started_at, substr(a.text, 1, 200), "
                "(SELECT rating FROM ratings WHERE analysis_id = a.id ORDER BY id DESC LIMIT 1), "
                "json_extract(a.grounding, '$.passed') "
                "FROM analyses a ORDER BY a.started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {
                "analysis_id": r[0],
                "status": r[1],
                "model": r[2],
                "fallback": bool(r[3]),
                "incident_ids": json.loads(r[4]),
                "patterns": json.loads(r[5]),
                "started_at": r[6],
                "preview": r[7],
                "rating": r[8],
                # whether the answer passed its grounding checks; None before it completed
                "grounded": None if r[9] is None else bool(r[9]),
            }
            for r in rows
        ]

    def analysis(self, analysis_id: str) -> dict[str, Any]:
        self.flush()
        with _translated("read the analysis"), self._lock:
            row = self._db.execute(
                "SELECT id, status, model, fallback, incident_ids, patterns, text, reason, "
                "prompt_system, prompt_user, counters, started_at, finished_at, parts, "
                "grounding, example_ids FROM analyses WHERE id=?",
                (analysis_id,),
            ).fetchone()
            if row is None:
                raise UnknownAnalysis(f"no analysis with id {analysis_id!r}")
            ratings = self._db.execute(
                "SELECT rating, correction, rater, rated_at_ns FROM ratings WHERE analysis_id=? "
                "ORDER BY id",
                (analysis_id,),
            ).fetchall()
            incidents = [
                json.loads(r[0])
                for r in self._db.execute(
                    f"SELECT body FROM incidents WHERE id IN "
                    f"({','.join('?' * len(json.loads(row[4])))})",
                    json.loads(row[4]),
                )
            ]
        return {
            "analysis_id": row[0],
            "status": row[1],
            "model": row[2],
            "fallback": bool(row[3]),
            "incident_ids": json.loads(row[4]),
            "patterns": json.loads(row[5]),
            "text": row[6],
            "reason": row[7],
            "prompt": {"system": row[8], "user": row[9]},
            "counters": json.loads(row[10]),
            "started_at": row[11],
            "finished_at": row[12],
            "parts": json.loads(row[13]),
            "grounding": json.loads(row[14]),
            "example_ids": json.loads(row[15]),
            "incidents": incidents,
            "ratings": [
                Rating(analysis_id, RatingValue(r[0]), r[1], r[3], r[2]).to_dict() for r in ratings
            ],
        }
