"""The bounded queue between receivers and stages."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

from spanwatch.daemon import Pipeline
from spanwatch.model import SpanBatch
from spanwatch.otlp import decode_request, release_free_memory, resident_bytes
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


def test_housekeeping_runs_on_the_worker_between_batches_even_when_it_fails() -> None:
    """The daemon hands freed memory back to the OS this way; a failure is logged, not fatal."""
    calls: list[str] = []

    def housekeeping() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise RuntimeError("bug")

    async def scenario() -> None:
        pipeline = Pipeline(
            1000, [lambda b: None], CollectorRegistry(), housekeeping, housekeeping_s=0.05
        )
        pipeline.start()
        for _ in range(3):
            pipeline.offer(_batch(2))
            await asyncio.sleep(0.1)
        await pipeline.drain()
        assert len(calls) >= 2
        assert threading.main_thread().name not in calls

    asyncio.run(scenario())


def test_freed_memory_goes_back_to_the_os() -> None:
    """On glibc, blocks freed between live ones stop counting as resident."""
    if not release_free_memory():
        pytest.skip("no malloc_trim here (not glibc)")
    keep, spare = [], []
    for _ in range(1000):  # 64 KiB blocks (malloc, not Python's small-object arenas)
        keep.append(bytearray(600))
        spare.append(bytearray(64 * 1024))
    del spare
    release_free_memory()
    before = resident_bytes()
    spare = [bytearray(64 * 1024) for _ in range(1000)]
    for block in spare:
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page
    grown = resident_bytes() - before
    del spare
    release_free_memory()
    assert resident_bytes() - before < grown / 2
    assert keep
