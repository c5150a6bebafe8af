"""A full queue answers with a retryable status; nothing is dropped silently."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanwatch.model import SpanBatch
from tests.conftest import RunningDaemon
from tests.otlp_client import grpc_export, http_request
from tests.otlp_payloads import many_spans

QUEUE = 8192
REQUESTS = 6


def slow_stage(batch: SpanBatch) -> None:
    # Stands in for a detector that cannot keep up: it holds the event loop, so requests pile up.
    time.sleep(0.25)


def _overloaded_daemon(make_daemon: Callable[..., RunningDaemon]) -> RunningDaemon:
    return make_daemon(
        stages=[slow_stage], **{"receiver.queue_spans": QUEUE, "receiver.retry_after": "2s"}
    )


def test_grpc_overload_is_unavailable_with_retry_info(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """Each request is accepted and counted, or refused UNAVAILABLE with RetryInfo."""
    d = _overloaded_daemon(make_daemon)
    body = many_spans(QUEUE).SerializeToString()
    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = list(pool.map(lambda _: grpc_export(d.grpc_target, body), range(REQUESTS)))
    ok = [a for a in answers if a.code == grpc.StatusCode.OK]
    busy = [a for a in answers if a.code == grpc.StatusCode.UNAVAILABLE]
    assert len(ok) + len(busy) == REQUESTS, [a.code for a in answers]
    assert ok and busy
    for answer in busy:
        assert answer.retry_delay() == 2.0
        assert "retry later" in answer.details
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == len(ok) * QUEUE
    assert d.metric("spanwatch_receiver_refused_spans_total", transport="grpc") == (
        len(busy) * QUEUE
    )
    d.wait_for_spans(len(ok) * QUEUE, timeout=30)
    assert len(d.spans()) == len(ok) * QUEUE


def test_http_overload_is_503_with_retry_after(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """Over HTTP a full queue answers 503 with Retry-After, never 500 or a silent drop."""
    d = _overloaded_daemon(make_daemon)
    body = many_spans(QUEUE).SerializeToString()
    url = f"{d.http_url}/v1/traces"
    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = list(pool.map(lambda _: http_request(url, body), range(REQUESTS)))
    statuses = sorted(a.status for a in answers)
    assert set(statuses) == {200, 503}, statuses
    busy = [a for a in answers if a.status == 503]
    assert all(a.headers["Retry-After"] == "2" for a in busy)
    accepted = d.metric("spanwatch_receiver_accepted_spans_total", transport="http")
    assert accepted == statuses.count(200) * QUEUE
    assert d.metric("spanwatch_receiver_refused_spans_total", transport="http") == (
        len(busy) * QUEUE
    )


def test_sdk_exporter_retries_through_overload_until_every_span_lands(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """The OTLP exporter honours UNAVAILABLE + RetryInfo: every span arrives in the end."""
    d = make_daemon(
        stages=[slow_stage], **{"receiver.queue_spans": QUEUE, "receiver.retry_after": "200ms"}
    )
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "burst"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    senders = 4
    for i in range(senders * QUEUE):
        with tracer.start_as_current_span(f"op{i % 8}"):
            pass
    spans = memory.get_finished_spans()
    chunks = [spans[i * QUEUE : (i + 1) * QUEUE] for i in range(senders)]
    # One exporter per sender, as each SDK pipeline has its own: on UNAVAILABLE the exporter
    # closes and reopens its channel, which another thread's export must not be using.
    exporters = [
        OTLPSpanExporter(endpoint=d.grpc_target, insecure=True, timeout=30) for _ in chunks
    ]
    with ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(lambda e, c: e.export(c), exporters, chunks))
    assert results == [SpanExportResult.SUCCESS] * senders
    assert d.metric("spanwatch_receiver_refused_spans_total", transport="grpc") > 0
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == len(spans)
    got = d.wait_for_spans(len(spans), timeout=30)
    assert len({row.span_id for row in got}) == len(spans)


def test_above_the_memory_limit_requests_are_refused_retryably(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """Over receiver.memory_limit: UNAVAILABLE + RetryInfo and 503 + Retry-After, all counted."""
    d = make_daemon(**{"receiver.memory_limit": "1MiB"})  # this process is always above it
    body = many_spans(100).SerializeToString()
    answer = grpc_export(d.grpc_target, body)
    assert answer.code == grpc.StatusCode.UNAVAILABLE
    assert "memory limit" in answer.details and answer.retry_delay() == 1.0
    http = http_request(f"{d.http_url}/v1/traces", body)
    assert http.status == 503 and http.headers["Retry-After"] == "1"
    assert d.metric("spanwatch_receiver_refused_spans_total", transport="grpc") == 100
    assert d.metric("spanwatch_receiver_refused_spans_total", transport="http") == 100
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 0


def test_pushing_past_the_memory_limit_drops_nothing_silently(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """Batches pile up past the limit: every span is accepted and counted, or refused retryably."""
    from spanwatch.otlp import resident_bytes

    gate = threading.Event()

    def held(batch: SpanBatch) -> None:
        gate.wait(60)  # the detector is stuck: accepted batches stay in memory

    limit = resident_bytes() + (40 << 20)
    d = make_daemon(
        stages=[held], **{"receiver.memory_limit": limit, "receiver.queue_spans": 2_000_000}
    )
    body = many_spans(QUEUE).SerializeToString()
    answers = []
    try:
        for _ in range(30):
            answers.append(grpc_export(d.grpc_target, body))
            time.sleep(0.12)  # let the limiter take a fresh reading
    finally:
        gate.set()
    codes = [a.code for a in answers]
    ok, busy = codes.count(grpc.StatusCode.OK), codes.count(grpc.StatusCode.UNAVAILABLE)
    assert ok + busy == len(codes), codes
    assert ok >= 1 and busy >= 1, codes
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == ok * QUEUE
    assert d.metric("spanwatch_receiver_refused_spans_total", transport="grpc") == busy * QUEUE
    d.wait_for_spans(ok * QUEUE, timeout=60)


def test_a_request_that_cannot_fit_is_refused_before_it_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under overload the spans are counted without decoding them, refused and counted."""
    from prometheus_client import CollectorRegistry

    from spanwatch.otlp import Ingest, Overloaded, ReceiverMetrics, _ingest
    from spanwatch.otlp._decode import NATIVE

    if not NATIVE:
        pytest.skip("counting without decoding needs the C fast path")
    decoded: list[bytes] = []
    real_decode = _ingest.decode_protobuf
    monkeypatch.setattr(
        _ingest, "decode_protobuf", lambda body: decoded.append(body) or real_decode(body)
    )
    registry = CollectorRegistry()
    taken: list[SpanBatch] = []
    ingest = Ingest(
        lambda batch: taken.append(batch) or True,
        ReceiverMetrics(registry),
        retry_after=1.0,
        room=lambda spans: spans <= 5,
    )
    with pytest.raises(Overloaded, match="busy: 6 span"):
        ingest.export(many_spans(6).SerializeToString(), "grpc")
    assert not decoded and not taken
    refused = registry.get_sample_value(
        "spanwatch_receiver_refused_spans_total", {"transport": "grpc"}
    )
    assert refused == 6
    assert ingest.export(many_spans(5).SerializeToString(), "grpc") == (0, "")
    assert len(decoded) == 1 and len(taken[0]) == 5
