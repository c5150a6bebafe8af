"""The REST API on the HTTP listener (DESIGN contract 6): ratings, stats, exports, analyses,
incidents and the daemon's status. The read-only parts are also served on the WebSocket
listener, for the live page (same origin, no CORS).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from spanwatch.model import InvalidRating, StorageUnavailable, UnknownAnalysis
from spanwatch.publish import RatingDesk
from spanwatch.store import FORMATS, Store, export_records


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def parse_since(text: str) -> int:
    """``2026-11-25`` or an ISO 8601 time (UTC unless it says otherwise) → Unix ns."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since must be a date or time like 2026-11-25, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


# A read-only endpoint: the query's parameters in, (HTTP status, JSON body) out.
Endpoint = Callable[[Mapping[str, str]], Awaitable[tuple[int, Any]]]

INCIDENT_FILTERS = ("id", "status", "service", "pattern", "namespace", "environment")


def encode_cursor(cursor: tuple[str, str] | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        detected_at, incident_id = json.loads(raw)
        return str(detected_at), str(incident_id)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("cursor is not one this API gave (next_cursor)") from None


class RestApi:
    def __init__(
        self,
        store: Store,
        ratings: RatingDesk,
        status: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self._store = store
        self._ratings = ratings
        self._status = status

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/training/rate", _mapped(self.rate)),
            web.get("/api/training/stats", _mapped(self.stats)),
            web.get("/api/training/export", _mapped(self.export)),
            web.get("/api/analyses", _mapped(self.analyses)),
            web.get("/api/analyses/{analysis_id}", _mapped(self.analysis)),
            web.get("/api/incidents", _mapped(_http(self.incidents_endpoint))),
            web.get("/api/status", _mapped(_http(self.status_endpoint))),
        ]

    def page_endpoints(self) -> dict[str, Endpoint]:
        """What the live page reads from its own listener, by path."""
        return {
            "/api/incidents": self.incidents_endpoint,
            "/api/status": self.status_endpoint,
            "/api/analyses": self.analyses_endpoint,
        }

    async def incidents_endpoint(self, query: Mapping[str, str]) -> tuple[int, Any]:
        """``GET /api/incidents?id=&status=&service=&pattern=&namespace=&environment=
        &min_severity=&limit=&cursor=``: newest first, with the cursor of the next page."""
        filters = {k: query[k] for k in INCIDENT_FILTERS if query.get(k)}
        if filters.get("status", "open") not in ("open", "resolved"):
            return 400, {"error": f"status must be open or resolved, not {filters['status']!r}"}
        severity = query.get("min_severity", "5")
        if severity not in {"1", "2", "3", "4", "5"}:
            return 400, {"error": f"min_severity must be 1 to 5, not {severity!r}"}
        try:
            limit = int(query.get("limit", "50"))
            before = decode_cursor(query["cursor"]) if query.get("cursor") else None
        except ValueError as exc:
            message = str(exc) if "cursor" in str(exc) else "limit must be a number"
            return 400, {"error": message}
        limit = max(1, min(500, limit))
        try:
            found, cursor = await asyncio.to_thread(
                lambda: self._store.incidents(
                    limit=limit, before=before, max_severity=int(severity), **filters
                )
            )
            counts = await asyncio.to_thread(self._store.incident_counts)
        except StorageUnavailable as exc:
            return 503, {"error": str(exc)}
        return 200, {"incidents": found, "next_cursor": encode_cursor(cursor), "counts": counts}

    async def status_endpoint(self, query: Mapping[str, str]) -> tuple[int, Any]:
        """``GET /api/status``: ingest rate, the detector's counters, incidents held."""
        status = dict(self._status())
        try:
            status["incidents"] = await asyncio.to_thread(self._store.incident_counts)
            stats = await asyncio.to_thread(self._store.stats)
            status["ratings"] = {k: stats[k] for k in ("rated", "good", "bad", "corrected")}
        except StorageUnavailable as exc:
            status["incidents"] = {"error": str(exc)}
        return 200, status

    async def analyses_endpoint(self, query: Mapping[str, str]) -> tuple[int, Any]:
        """The latest analyses with their whole text (``?limit=``, at most 50), for the page."""
        try:
            limit = max(1, min(50, int(query.get("limit", "20"))))
        except ValueError:
            return 400, {"error": "limit must be a number"}
        try:
            rows = await asyncio.to_thread(self._store.analyses, limit)
            full = [await asyncio.to_thread(self._store.analysis, r["analysis_id"]) for r in rows]
        except (StorageUnavailable, UnknownAnalysis) as exc:
            return 503, {"error": str(exc)}
        for row, detail in zip(rows, full, strict=True):
            detail["rating"] = row["rating"]
            detail.pop("prompt", None)
        return 200, full

    async def rate(self, request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(
                400,
                "the body must be a JSON object: "
                '{"analysis_id": ..., "rating": "good"|"bad", "correction": ...}',
            )
        peer = request.remote or "unknown"
        try:
            rating = await self._ratings.rate(body, rater=f"rest:{peer}")
        except InvalidRating as exc:
            return _error(400, str(exc))
        except UnknownAnalysis as exc:
            return _error(404, str(exc))
        except StorageUnavailable as exc:
            return _error(503, str(exc))
        return web.json_response({"rating": rating})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self._store.stats))

    async def export(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "")
        if fmt not in FORMATS:
            return _error(400, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        try:
            since = parse_since(request.query["since"]) if "since" in request.query else 0
        except ValueError as exc:
            return _error(400, str(exc))
        rated = await asyncio.to_thread(self._store.rated, since)
        lines = [json.dumps(r, ensure_ascii=False) for r in export_records(rated, fmt)]
        return web.Response(
            text="".join(line + "\n" for line in lines), content_type="application/x-ndjson"
        )

    async def analyses(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "50"))))
        except ValueError:
            return _error(400, "limit must be a number")
        return web.json_response(await asyncio.to_thread(self._store.analyses, limit))

    async def analysis(self, request: web.Request) -> web.Response:
        try:
            found = await asyncio.to_thread(self._store.analysis, request.match_info["analysis_id"])
        except UnknownAnalysis as exc:
            return _error(404, str(exc))
        return web.json_response(found)


def _mapped(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Every route answers the same trouble the same way, whatever the handler caught itself:
    a store that cannot be used now (full, read-only, locked) is 503, a rating or a value it
    cannot take is 400, an unknown analysis 404; each with ``{"error": message}``."""

    async def handle(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except StorageUnavailable as exc:
            return _error(503, str(exc))
        except UnknownAnalysis as exc:
            return _error(404, str(exc))
        except InvalidRating as exc:
            return _error(400, str(exc))

    return handle


def _http(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        status, body = await endpoint(request.query)
        return web.json_response(body, status=status)

    return handle
