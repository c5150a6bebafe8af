"""Builders of OTLP requests for the tests: protobuf messages and their OTLP/JSON form."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")
START = 1_700_000_000_000_000_000


def attr(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(**fields: Any) -> Span:
    attrs = fields.pop("attributes", {})
    values: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "name": "GET /cart",
        "kind": 2,
        "start_time_unix_nano": START,
        "end_time_unix_nano": START + 5_000_000,
    }
    values.update(fields)
    message = Span(**values)
    message.attributes.extend(attr(k, v) for k, v in attrs.items())
    return message


def request(
    *spans: Span, service: str | None = "checkout", version: str = ""
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    resource_spans = req.resource_spans.add()
    if service is not None:
        resource_spans.resource.attributes.append(attr("service.name", service))
    if version:
        resource_spans.resource.attributes.append(attr("service.version", version))
    resource_spans.scope_spans.add().spans.extend(spans)
    return req


def many_spans(count: int, service: str = "load") -> ExportTraceServiceRequest:
    """One request of ``count`` distinct, valid spans."""
    spans = []
    for i in range(count):
        spans.append(
            span(
                trace_id=(i + 1).to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name=f"op{i % 16}",
                start_time_unix_nano=START + i,
                end_time_unix_nano=START + i + 1000 + i % 7,
                status=Status(code=2 if i % 50 == 0 else 0),
                attributes={"http.route": f"/r{i % 16}", "http.response.status_code": 200},
            )
        )
    return request(*spans, service=service)
