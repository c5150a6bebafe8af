"""The bounded queue between receivers and stages."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import CollectorRegistry

from spanwatch.daemon import Pipeline
from spanwatch.model import SpanBatch
from spanwatch.otlp import decode_request
from tests.otlp_payloads import many_spans


def _batch(n: int) -> SpanBatch:
    return decode_request(many_spans(n)).batch


def test_queue_is_bounded_in_spans_and_drains_in_order() -> None:
    """offer() refuses what does not fit; drain() processes everything accepted, in order."""
    gate = threading.Event()
    seen: list[int] = []

    def stage(batch: SpanBatch) -> None:
        gate.wait(10)
        seen.append(len(batch))

    async def scenario() -> None:
        pipeline = Pipeline(100, [stage], CollectorRegistry())
        pipeline.start()
        assert pipeline.offer(_batch(60))
        assert pipeline.offer(_batch(40))
        assert not pipeline.offer(_batch(1))  # 100 queued: full
        assert pipeline.queued_spans == 100
        gate.set()
        await pipeline.drain()
        assert seen == [60, 40]
        assert pipeline.processed_spans == 100
        assert not pipeline.offer(_batch(1))  # closed

    asyncio.run(scenario())


def test_an_empty_queue_takes_a_batch_larger_than_its_capacity() -> None:
    """A request bigger than the queue is not refused forever."""

    async def scenario() -> None:
        pipeline = Pipeline(10, [], CollectorRegistry())
        pipeline.start()
        assert pipeline.offer(_batch(50))
        await pipeline.drain()
        assert pipeline.processed_spans == 50

    asyncio.run(scenario())


def test_a_failing_stage_is_counted_and_does_not_stop_the_pipeline() -> None:
    """A stage that raises is logged and counted; later stages and batches still run."""
    after: list[int] = []

    def broken(batch: SpanBatch) -> None:
        raise RuntimeError("bug")

    async def scenario() -> None:
        registry = CollectorRegistry()
        pipeline = Pipeline(1000, [broken, lambda b: after.append(len(b))], registry)
        pipeline.start()
        pipeline.offer(_batch(3))
        pipeline.offer(_batch(4))
        await pipeline.drain()
        assert after == [3, 4]
        assert registry.get_sample_value("spanwatch_pipeline_stage_errors_total") == 2
        assert pipeline.watermark_ns == max(_batch(4).end_ns)

    asyncio.run(scenario())
