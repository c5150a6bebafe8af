"""The step both receivers share: decode a body, hand the spans over, count what happened."""

from __future__ import annotations

from collections.abc import Callable

from spanwatch.model import SpanBatch

from ._decode import decode_protobuf, decode_request, parse_json
from ._errors import Overloaded, ReceiverError
from ._memory import MemoryGuard
from ._metrics import ReceiverMetrics

# Takes a batch, or returns False when it has no room for it now.
BatchSink = Callable[[SpanBatch], bool]


class Ingest:
    def __init__(
        self,
        sink: BatchSink,
        metrics: ReceiverMetrics,
        retry_after: float,
        memory: MemoryGuard | None = None,
    ) -> None:
        self._sink = sink
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
            result = decode_request(parse_json(body)) if is_json else decode_protobuf(body)
            batch = result.batch
            if batch and self._memory.over():
                metrics.refused_spans.labels(transport).inc(len(batch) + result.refused)
                raise Overloaded(
                    f"spanwatch is above its memory limit ({self._memory.limit >> 20} MiB): "
                    f"{len(batch)} span(s) not taken, retry later",
                    self._retry_after,
                )
            if batch and not self._sink(batch):
                metrics.refused_spans.labels(transport).inc(len(batch) + result.refused)
                raise Overloaded(
                    f"spanwatch is busy: {len(batch)} span(s) not taken, retry later",
                    self._retry_after,
                )
        except ReceiverError as exc:
            self.count_failure(transport, exc)
            raise
        metrics.accepted_spans.labels(transport).inc(len(batch))
        if result.refused:
            metrics.refused_spans.labels(transport).inc(result.refused)
        metrics.requests.labels(transport, "partial" if result.refused else "ok").inc()
        return result.refused, result.reason

    def count_failure(self, transport: str, exc: ReceiverError) -> None:
        self._metrics.requests.labels(transport, type(exc).__name__).inc()
