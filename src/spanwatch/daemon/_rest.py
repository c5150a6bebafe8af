"""The REST API on the HTTP listener (DESIGN contract 6): ratings, stats, exports, analyses."""

from __future__ import annotations

import asyncio
import json
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


class RestApi:
    def __init__(self, store: Store, ratings: RatingDesk) -> None:
        self._store = store
        self._ratings = ratings

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/training/rate", self.rate),
            web.get("/api/training/stats", self.stats),
            web.get("/api/training/export", self.export),
            web.get("/api/analyses", self.analyses),
            web.get("/api/analyses/{analysis_id}", self.analysis),
        ]

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
