"""Rated past analyses like a new batch's incidents: the examples its prompt shows at once.

A correction helps the very next similar incident, before any training: the analyses whose
latest rating is good, or bad with a correction, are ranked by how much of their incidents
matches a new one. The same signature (pattern, root-cause service and operation) counts most,
then the root cause's service or operation, then the pattern or the observed service. Among
equals a correction comes before a good rating, and the newest rating first.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

# weight of each match between a past incident and a new one
SIGNATURE, ROOT_SERVICE, ROOT_OPERATION, PATTERN, SERVICE = 4, 2, 2, 1, 1
CANDIDATES = 200  # rated analyses read per query, the most recently rated first


def _score(past: dict[str, Any], new: dict[str, Any]) -> int:
    old_root, new_root = past.get("root_cause") or {}, new.get("root_cause") or {}
    same = {
        "pattern": past.get("pattern") == new.get("pattern"),
        "service": bool(new.get("service")) and past.get("service") == new.get("service"),
        "root_service": bool(new_root.get("service"))
        and old_root.get("service") == new_root.get("service"),
        "root_operation": bool(new_root.get("operation"))
        and old_root.get("operation") == new_root.get("operation"),
    }
    score = (
        PATTERN * same["pattern"]
        + SERVICE * same["service"]
        + ROOT_SERVICE * same["root_service"]
        + ROOT_OPERATION * same["root_operation"]
    )
    if same["pattern"] and same["root_service"] and same["root_operation"]:
        score += SIGNATURE
    return score


def similar(
    db: sqlite3.Connection, incidents: list[dict[str, Any]], limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` rated analyses, best first: ``analysis_id``, ``incidents`` (as stored),
    ``answer`` (the correction, else the text rated good), ``corrected``, ``score``."""
    if not incidents or limit <= 0:
        return []
    ids = {str(i.get("id", "")) for i in incidents}
    patterns = sorted({str(i.get("pattern", "")) for i in incidents})
    services = sorted(
        {str((i.get("root_cause") or {}).get("service", "")) for i in incidents}
        | {str(i.get("service", "")) for i in incidents}
    )
    marks = ",".join("?" * len(patterns)), ",".join("?" * len(services))
    rows = db.execute(
        "SELECT a.id, a.text, r.rating, r.correction, r.rated_at_ns, a.incident_ids "
        "FROM ratings r JOIN analyses a ON a.id = r.analysis_id "
        "WHERE r.id = (SELECT MAX(id) FROM ratings WHERE analysis_id = r.analysis_id) "
        "AND a.status = 'completed' AND (r.rating = 'good' OR r.correction != '') "
        "AND EXISTS (SELECT 1 FROM json_each(a.incident_ids) j JOIN incidents i ON i.id = j.value "
        f"WHERE i.pattern IN ({marks[0]}) OR i.root_service IN ({marks[1]}) "
        f"OR i.service IN ({marks[1]})) "
        "ORDER BY r.rated_at_ns DESC, r.id DESC LIMIT ?",
        [*patterns, *services, *services, CANDIDATES],
    ).fetchall()
    found: list[tuple[int, int, int, dict[str, Any]]] = []
    for analysis_id, text, rating, correction, rated_at_ns, incident_ids in rows:
        past_ids = json.loads(incident_ids)
        bodies = [
            json.loads(body)
            for (body,) in db.execute(
                f"SELECT body FROM incidents WHERE id IN ({','.join('?' * len(past_ids))})",
                past_ids,
            )
        ]
        score = max((_score(p, n) for p in bodies for n in incidents), default=0)
        if score <= 0:
            continue
        corrected = rating == "bad" and bool(correction.strip())
        same_incident = bool(ids & set(past_ids))
        found.append(
            (
                score + (1 if same_incident else 0),
                int(corrected),
                int(rated_at_ns),
                {
                    "analysis_id": analysis_id,
                    "incidents": bodies,
                    "answer": correction if corrected else text,
                    "corrected": corrected,
                    "rating": rating,
                    "score": score,
                },
            )
        )
    found.sort(key=lambda f: (f[0], f[1], f[2]), reverse=True)
    return [f[3] for f in found[:limit]]
