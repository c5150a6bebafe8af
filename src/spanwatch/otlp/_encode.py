"""Span batches back into OTLP requests: what ``spanwatch simulate`` sends to a daemon."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from spanwatch.model import SEMCONV_COLUMNS, SpanBatch, source_parts, split_scope

# Each column is written under its current semantic-convention name.
_ATTRIBUTE_OF = {column: names[0] for column, names in SEMCONV_COLUMNS.items()}


def encode_batch(batch: SpanBatch) -> ExportTraceServiceRequest:
    """One request, one ResourceSpans per (service, version, scope, source), attributes for
    set columns. The scope is written under the default identity attributes, the source's
    instance as ``service.instance.id``."""
    request = ExportTraceServiceRequest()
    resources: dict[tuple[str, str, str, str], ResourceSpans] = {}
    columns = batch.columns()
    for i in range(len(batch)):
        ident = (batch.service[i], batch.service_version[i], batch.scope[i], batch.source[i])
        resource = resources.get(ident)
        if resource is None:
            service, version, scope, source = ident
            resource = request.resource_spans.add()
            attributes = resource.resource.attributes
            attributes.append(_kv("service.name", service))
            if version:
                attributes.append(_kv("service.version", version))
            for name, value in split_scope(scope).items():
                attributes.append(_kv(name, value))
            if instance := source_parts(source)[2]:
                attributes.append(_kv("service.instance.id", instance))
            resource.scope_spans.add().scope.name = "spanwatch.sim"
            resources[ident] = resource
        span = Span(
            trace_id=batch.trace_id[i],
            span_id=batch.span_id[i],
            parent_span_id=batch.parent_span_id[i],
            name=batch.name[i],
            kind=Span.SpanKind.ValueType(batch.kind[i]),
            start_time_unix_nano=batch.start_ns[i],
            end_time_unix_nano=batch.end_ns[i],
            status=Status(
                code=Status.StatusCode.ValueType(batch.status_code[i]),
                message=batch.status_message[i],
            ),
        )
        for column, attribute in _ATTRIBUTE_OF.items():
            value = columns[column][i]
            if value:
                span.attributes.append(_kv(attribute, value))
        if batch.exception_type[i]:
            event = span.events.add(name="exception", time_unix_nano=batch.end_ns[i])
            event.attributes.append(_kv("exception.type", batch.exception_type[i]))
            event.attributes.append(_kv("exception.message", batch.exception_message[i]))
        resource.scope_spans[0].spans.append(span)
    return request


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))
