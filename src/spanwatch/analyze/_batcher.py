"""Which incidents go to the LLM, and together: a batching window on the wall clock.

Sans-I/O: the caller passes the time. Severe incidents (severity ≤ ``min_severity``) are
collected for ``window_s`` from the first one, or until ``max_batch`` are waiting, then become
one batch: one LLM call. An incident already analysed goes again only when it escalates. Ready
batches wait in a bounded queue; when it overflows, the least severe batch gives way.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Batch:
    incidents: tuple[dict[str, Any], ...]

    @property
    def worst(self) -> int:
        return min(int(i.get("severity", 5)) for i in self.incidents)


class Batcher:
    def __init__(
        self, window_s: float, max_batch: int, min_severity: int, queue_batches: int
    ) -> None:
        self.window_s = window_s
        self.max_batch = max_batch
        self.min_severity = min_severity
        self.queue_batches = queue_batches
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._opened_at = 0.0
        self._ready: list[Batch] = []
        self._analysed: OrderedDict[str, int] = OrderedDict()  # id -> severity analysed
        self.dropped = 0

    def offer(self, incident: dict[str, Any], now: float) -> bool:
        """Consider an opened or updated incident; True when it will be analysed."""
        severity = int(incident.get("severity", 5))
        incident_id = str(incident.get("id", ""))
        if severity > self.min_severity or not incident_id:
            return False
        previous = self._analysed.get(incident_id)
        if previous is not None and severity >= previous and incident_id not in self._pending:
            return False  # analysed already, and it has not got worse
        if not self._pending:
            self._opened_at = now
        self._pending[incident_id] = incident  # a newer state replaces an older one
        self._analysed[incident_id] = severity
        self._analysed.move_to_end(incident_id)
        if len(self._analysed) > 10_000:
            self._analysed.popitem(last=False)
        if len(self._pending) >= self.max_batch:
            self._close()
        return True

    def due(self, now: float) -> None:
        """Close the window if it has run its course."""
        if self._pending and now - self._opened_at >= self.window_s:
            self._close()

    def _close(self) -> None:
        self._ready.append(Batch(tuple(self._pending.values())))
        self._pending.clear()
        if len(self._ready) > self.queue_batches:
            least = max(range(len(self._ready)), key=lambda i: (self._ready[i].worst, i))
            del self._ready[least]
            self.dropped += 1

    def take(self) -> Batch | None:
        """The next batch to analyse: the most severe first, oldest among equals."""
        if not self._ready:
            return None
        best = min(range(len(self._ready)), key=lambda i: (self._ready[i].worst, i))
        return self._ready.pop(best)

    @property
    def waiting(self) -> int:
        return len(self._ready) + (1 if self._pending else 0)
