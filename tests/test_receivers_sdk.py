"""Real OpenTelemetry SDK exporters send to a running daemon; what it decodes is what they sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.conftest import RunningDaemon


def _exporters(d: RunningDaemon) -> dict[str, Callable[[], SpanExporter]]:
    return {
        "grpc-gzip": lambda: GrpcExporter(
            endpoint=d.grpc_target, insecure=True, compression=GrpcCompression.Gzip
        ),
        "grpc": lambda: GrpcExporter(endpoint=d.grpc_target, insecure=True),
        "http-protobuf-gzip": lambda: HttpExporter(
            endpoint=f"{d.http_url}/v1/traces", compression=HttpCompression.Gzip
        ),
        "http-protobuf": lambda: HttpExporter(endpoint=f"{d.http_url}/v1/traces"),
    }


def _emit_workload(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("spanwatch.tests")
    with tracer.start_as_current_span(
        "GET /checkout",
        kind=SpanKind.SERVER,
        attributes={
            "http.route": "/checkout",
            "http.request.method": "GET",
            "http.response.status_code": 500,
        },
    ) as root:
        with tracer.start_as_current_span(
            "SELECT orders",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.operation.name": "SELECT",
                "server.address": "orders-db",
            },
        ):
            pass
        try:
            with tracer.start_as_current_span(
                "charge", kind=SpanKind.CLIENT, attributes={"peer.service": "payments"}
            ):
                raise TimeoutError("payment gateway did not answer")
        except TimeoutError:
            pass
        with tracer.start_as_current_span(
            "publish", kind=SpanKind.PRODUCER, attributes={"messaging.system": "kafka"}
        ):
            pass
        root.set_status(Status(StatusCode.ERROR, "checkout failed"))


@pytest.mark.parametrize("transport", ["grpc-gzip", "grpc", "http-protobuf-gzip", "http-protobuf"])
def test_sdk_exporter_spans_arrive_exactly(daemon: RunningDaemon, transport: str) -> None:
    """Names, service, ids, kinds, times, status and exceptions survive the trip unchanged."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop", "service.version": "2.0.1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(_exporters(daemon)[transport]()))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _emit_workload(provider)
    provider.shutdown()

    sent: tuple[ReadableSpan, ...] = memory.get_finished_spans()
    assert len(sent) == 4
    got = {row.span_id: row for row in daemon.wait_for_spans(len(sent))}
    assert len(got) == len(sent)
    for span in sent:
        ctx = span.get_span_context()
        assert ctx is not None
        row = got[ctx.span_id.to_bytes(8, "big")]
        assert row.trace_id == ctx.trace_id.to_bytes(16, "big")
        parent = span.parent.span_id.to_bytes(8, "big") if span.parent else b""
        assert row.parent_span_id == parent
        assert (row.service, row.service_version) == ("shop", "2.0.1")
        assert row.name == span.name
        assert row.kind == span.kind.value + 1  # the SDK's enum starts at INTERNAL = 0
        assert (row.start_ns, row.end_ns) == (span.start_time, span.end_time)
        assert row.status_code == span.status.status_code.value
        assert row.status_message == (span.status.description or "")
        exceptions = [e for e in span.events if e.name == "exception"]
        if exceptions:
            attrs = exceptions[0].attributes or {}
            assert row.exception_type == attrs["exception.type"] == "TimeoutError"
            assert row.exception_message == attrs["exception.message"]
        else:
            assert row.exception_type == ""

    by_name = {row.name: row for row in got.values()}
    assert by_name["GET /checkout"].http_status_code == 500
    assert by_name["GET /checkout"].http_route == "/checkout"
    assert by_name["SELECT orders"].db_system == "postgresql"
    assert by_name["SELECT orders"].server_address == "orders-db"
    assert by_name["charge"].peer_service == "payments"
    assert by_name["publish"].messaging_system == "kafka"

    kind = "grpc" if transport.startswith("grpc") else "http"
    assert daemon.metric("spanwatch_receiver_accepted_spans_total", transport=kind) == 4
    assert daemon.metric("spanwatch_receiver_refused_spans_total", transport=kind) == 0
    assert daemon.metric("spanwatch_pipeline_processed_spans_total") == 4
