"""The step both receivers share: decode a body, hand the spans over, count what happened."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from spanwatch.model import SpanBatch

from ._decode import count_spans, decode_protobuf, decode_request, parse_json
from ._errors import Overloaded, ReceiverError
from ._memory import MemoryGuard
from ._metrics import ReceiverMetrics

# Takes a batch, or returns False when it has no room for it now.
BatchSink = Callable[[SpanBatch], bool]
# Whether a batch of so many spans would be taken now.
RoomCheck = Callable[[int], bool]


class Ingest:
    def __init__(
        self,
        sink: BatchSink,
        metrics: ReceiverMetrics,
        retry_after: float,
        memory: MemoryGuard | None = None,
        room: RoomCheck | None = None,
    ) -> None:
        self._sink = sink
        self._room = room
        self._metrics = metrics
        self._retry_after = retry_after
        self._memory = memory or MemoryGuard(0)

    def export(self, body: bytes, transport: str, is_json: bool = False) -> tuple[int, str]:
        """Decode and hand over one request body; returns (refused spans, reason).

        Raises a :class:`ReceiverError` for a body that cannot be decoded or a full queue.
        """
        metrics = self._metrics
        metrics.received_bytes.labels(transport).inc(len(body))
        try:
            # Refused before decoding when it can be told that it would be: under overload,
            # decoding requests only to refuse them would take CPU from the detector.
            if self._room is not None and not is_json and (spans := count_spans(body)):
                self._check_room(spans, transport, partial(self._room, spans))
            result = decode_request(parse_json(body)) if is_json else decode_protobuf(body)
            batch = result.batch
            if batch:
                self._check_room(len(batch) + result.refused, transport, partial(self._sink, batch))
        except ReceiverError as exc:
            self.count_failure(transport, exc)
            raise
        metrics.accepted_spans.labels(transport).inc(len(batch))
        if result.refused:
            metrics.refused_spans.labels(transport).inc(result.refused)
        metrics.requests.labels(transport, "partial" if result.refused else "ok").inc()
        return result.refused, result.reason

    def _check_room(self, spans: int, transport: str, taken: Callable[[], bool]) -> None:
        """Raise Overloaded, counting ``spans`` as refused, unless the memory limit allows
        and ``taken()`` says the spans are (or would be) taken."""
        if self._memory.over():
            why = f"spanwatch is above its memory limit ({self._memory.limit >> 20} MiB)"
        elif not taken():
            why = "spanwatch is busy"
        else:
            return
        self._metrics.refused_spans.labels(transport).inc(spans)
        raise Overloaded(f"{why}: {spans} span(s) not taken, retry later", self._retry_after)

    def count_failure(self, transport: str, exc: ReceiverError) -> None:
        self._metrics.requests.labels(transport, type(exc).__name__).inc()
