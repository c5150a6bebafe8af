"""The services' OpenTelemetry setup: a tracer provider with the service's resource, and the
exporters its spans leave by (OTLP/gRPC to a receiver, or OTLP/JSON lines to a file)."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

VERSION = "1.4.0"
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def to_otlp_json(request: Any) -> str:
    """An ``ExportTraceServiceRequest`` as one line of OTLP/JSON: protobuf's JSON mapping with
    enums as integers and trace and span ids as hex, as the OTLP/JSON spec writes them
    (protobuf's mapping would write them base64)."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for key in _ID_KEYS:
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return json.dumps(document, separators=(",", ":"))


class JsonLinesExporter(SpanExporter):
    """Writes each export as the SDK would send it (``encode_spans``), one OTLP/JSON request a
    line, to ``path``."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = to_otlp_json(encode_spans(spans))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def make_exporter(spec: str) -> SpanExporter:
    """``otlp:HOST:PORT`` (OTLP/gRPC, no TLS) or ``file:PATH`` (OTLP/JSON lines)."""
    kind, _, where = spec.partition(":")
    if kind == "otlp":
        # imported here: the recorder's services need no gRPC
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=where, insecure=True)
    if kind == "file":
        return JsonLinesExporter(Path(where))
    raise ValueError(f"unknown exporter {spec!r}: otlp:HOST:PORT or file:PATH")


def setup(service: str, exporter: SpanExporter) -> TracerProvider:
    """The global tracer provider of a service process, exporting in batches (the SDK's
    defaults, or the ``OTEL_BSP_*`` variables)."""
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": VERSION,
            "service.instance.id": f"{service}-{os.getpid()}",
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
