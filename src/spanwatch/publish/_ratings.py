"""The one rating function that the live page (WebSocket) and REST both call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from spanwatch.model import Event, EventType, Rating, RatingValue, parse_rating

from ._hub import Hub

Record = Callable[[str, RatingValue, str, str], Rating]
Stats = Callable[[], dict[str, Any]]


class RatingDesk:
    """Validates a rating, records it durably, then announces ``rating.recorded``.

    ``record`` (the store's) raises UnknownAnalysis for an id it does not know and returns only
    once the rating is on disk; it runs on a worker thread so the event loop never waits on it.
    """

    def __init__(self, hub: Hub, record: Record, stats: Stats) -> None:
        self._hub = hub
        self._record = record
        self._stats = stats

    async def rate(self, body: Any, rater: str = "") -> dict[str, Any]:
        """Record one rating; raises InvalidRating (400) or UnknownAnalysis (404)."""
        analysis_id, value, correction = parse_rating(body)
        rating = await asyncio.to_thread(self._record, analysis_id, value, correction, rater)
        stats = await asyncio.to_thread(self._stats)
        recorded = rating.to_dict()
        self._hub.publish(
            Event(
                EventType.RATING_RECORDED,
                {
                    "analysis_id": analysis_id,
                    "rating": recorded,
                    "stats": {
                        "total": stats["rated"],
                        "good": stats["good"],
                        "bad": stats["bad"],
                        "corrected": stats["corrected"],
                    },
                },
            )
        )
        return recorded
