"""The bounded hand-over between the receivers and the stages that process spans.

Receivers call :meth:`Pipeline.offer` on the event loop; it never blocks: with no room it says
no, and the receiver answers with a retryable status. The stages (the detector and what follows)
run on one worker thread, in arrival order, so a slow stage fills the queue instead of stalling
the receivers: senders get UNAVAILABLE / 503 promptly rather than timing out. The queue is
bounded in spans, not requests, so memory stays bounded whatever the request size.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from spanwatch.model import SpanBatch

Stage = Callable[[SpanBatch], None]
# Stages may also have ``tick(now_ns)``: called on the worker thread about once a second.
TICK_S = 1.0

log = structlog.get_logger("spanwatch.pipeline")


class Pipeline:
    def __init__(
        self,
        capacity_spans: int,
        stages: list[Stage],
        registry: CollectorRegistry,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_s: float = 10.0,
    ):
        """``housekeeping`` runs on the worker, between batches, every ``housekeeping_s``."""
        self._capacity = capacity_spans
        self._stages = stages
        self._housekeeping = housekeeping
        self._housekeeping_s = housekeeping_s
        self._queue: deque[SpanBatch] = deque()
        self._queued_spans = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.watermark_ns = 0
        self.processed_spans = 0
        self._processed = Counter(
            "spanwatch_pipeline_processed_spans",
            "Spans that went through every stage.",
            registry=registry,
        )
        self._stage_errors = Counter(
            "spanwatch_pipeline_stage_errors",
            "Batches a stage raised on.",
            registry=registry,
        )
        Gauge(
            "spanwatch_pipeline_queued_spans",
            "Spans accepted and waiting for the stages.",
            registry=registry,
        ).set_function(lambda: self._queued_spans)
        Gauge(
            "spanwatch_event_time_watermark_seconds",
            "The latest span end time seen (event time), as a Unix timestamp.",
            registry=registry,
        ).set_function(lambda: self.watermark_ns / 1e9)

    @property
    def queued_spans(self) -> int:
        return self._queued_spans

    def has_room(self, spans: int) -> bool:
        """Whether a batch of ``spans`` spans would be taken now (see :meth:`offer`)."""
        with self._cond:
            return not self._closing and self._fits(spans)

    def _fits(self, spans: int) -> bool:
        return not self._queued_spans or self._queued_spans + spans <= self._capacity

    def offer(self, batch: SpanBatch) -> bool:
        """Queue a batch; False when it does not fit now or the pipeline is shutting down.

        An empty queue takes a batch of any size, so one request larger than the queue is
        still accepted once the queue empties instead of being refused on every retry.
        """
        with self._cond:
            if self._closing:
                return False
            if not self._fits(len(batch)):
                return False
            self._queue.append(batch)
            self._queued_spans += len(batch)
            self._cond.notify()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spanwatch-pipeline", daemon=True)
        self._thread.start()

    async def drain(self) -> None:
        """Take no more batches, process what is queued, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _run(self) -> None:
        last_tick = last_housekeeping = time.monotonic()
        while True:
            batch: SpanBatch | None = None
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(timeout=TICK_S)
                if self._queue:
                    batch = self._queue[0]
                elif self._closing:
                    return  # closing and drained
            if batch is not None:
                # The batch still counts as queued while it is processed: the bound covers it.
                self._process(batch)
                with self._cond:
                    self._queue.popleft()
                    self._queued_spans -= len(batch)
            if time.monotonic() - last_tick >= TICK_S:
                last_tick = time.monotonic()
                self._tick()
            if self._housekeeping and time.monotonic() - last_housekeeping >= self._housekeeping_s:
                last_housekeeping = time.monotonic()
                try:
                    self._housekeeping()
                except Exception:
                    log.exception("housekeeping failed")

    def _tick(self) -> None:
        now = time.time_ns()
        for stage in self._stages:
            tick = getattr(stage, "tick", None)
            if tick is None:
                continue
            try:
                tick(now)
            except Exception:
                self._stage_errors.inc()
                log.exception("stage tick failed", stage=getattr(stage, "__name__", repr(stage)))

    def _process(self, batch: SpanBatch) -> None:
        for stage in self._stages:
            try:
                stage(batch)
            except Exception:
                # One bad batch must not stop the pipeline; the error is logged and counted.
                self._stage_errors.inc()
                log.exception("stage failed", stage=getattr(stage, "__name__", repr(stage)))
        self.watermark_ns = max(self.watermark_ns, batch.max_end_ns())
        self.processed_spans += len(batch)
        self._processed.inc(len(batch))
