"""The one rating function that the live page (WebSocket) and REST both call."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from typing import Any

from spanwatch.model import Event, EventType, Rating, parse_rating

from ._hub import Hub


class UnknownAnalysis(LookupError):
    """No analysis with that id (HTTP 404)."""


class RatingDesk:
    """Validates ratings, checks the analysis exists, and announces ``rating.recorded``.

    Here the analyses it knows are the ones the hub has published; a store, when wired in,
    takes over remembering them and keeping the ratings.
    """

    def __init__(self, hub: Hub, remember: int = 10_000) -> None:
        self._hub = hub
        self._analyses: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.stats: Counter[str] = Counter()
        hub.add_listener(self._observe)

    def _observe(self, message: dict[str, Any]) -> None:
        if message["type"] == EventType.ANALYSIS_COMPLETED:
            self._analyses[message["analysis_id"]] = None
            if len(self._analyses) > self._remember:
                self._analyses.popitem(last=False)

    def rate(self, body: Any, rater: str = "") -> dict[str, Any]:
        """Record one rating; raises InvalidRating (400) or UnknownAnalysis (404)."""
        analysis_id, value, correction = parse_rating(body)
        if analysis_id not in self._analyses:
            raise UnknownAnalysis(f"no analysis with id {analysis_id!r}")
        rating = Rating(analysis_id, value, correction, time.time_ns(), rater)
        self.stats["total"] += 1
        self.stats[str(value)] += 1
        if correction:
            self.stats["corrected"] += 1
        recorded = rating.to_dict()
        self._hub.publish(
            Event(
                EventType.RATING_RECORDED,
                {
                    "analysis_id": analysis_id,
                    "rating": recorded,
                    "stats": self.stats_dict(),
                },
            )
        )
        return recorded

    def stats_dict(self) -> dict[str, int]:
        return {key: self.stats[key] for key in ("total", "good", "bad", "corrected")}
