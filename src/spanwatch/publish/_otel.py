"""OTel events out: each incident and analysis event as a log record with an event name.

Records go through the SDK's ``BatchLogRecordProcessor`` (a bounded queue that drops when full,
exporting on its own thread) to the OTLP log exporter, so an unreachable endpoint never blocks
the hub. The exporter takes the standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers,
certificates, timeout) unless ``events.endpoint`` is set.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from spanwatch import __version__
from spanwatch.config import Events

# Tokens are streamed to subscribers; as log records they would be noise.
SKIPPED = frozenset({"analysis.token"})
_SEVERITY = {
    1: SeverityNumber.FATAL,
    2: SeverityNumber.ERROR,
    3: SeverityNumber.WARN,
    4: SeverityNumber.INFO,
    5: SeverityNumber.INFO,
}


def events_enabled(settings: Events, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if settings.enabled == "auto":
        return bool(
            settings.endpoint
            or env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
    return settings.enabled == "true"


class OtelEvents:
    """A hub listener that emits OTel log events; call :meth:`shutdown` to flush."""

    def __init__(self, settings: Events, exporter: LogRecordExporter | None = None) -> None:
        if exporter is None:
            exporter = OTLPLogExporter(
                endpoint=settings.endpoint or None,
                insecure=settings.insecure if settings.endpoint else None,
                # Bounds the exporter's own retries too, so shutdown never waits longer.
                timeout=settings.export_timeout,
            )
        self._provider = LoggerProvider(
            resource=Resource.create({"service.name": "spanwatch", "service.version": __version__})
        )
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(
                exporter,
                max_queue_size=settings.queue_size,
                max_export_batch_size=min(512, settings.queue_size),
                schedule_delay_millis=500,
                export_timeout_millis=int(settings.export_timeout * 1000),
            )
        )
        self._logger = self._provider.get_logger("spanwatch.events", __version__)
        # incident id -> (trace id, span id) of its example span, for analysis events
        self._examples: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in SKIPPED:
            return
        incident = message.get("incident")
        trace_id = span_id = 0
        severity = 5
        if incident is not None:
            severity = int(incident.get("severity", 5))
            example = incident.get("example")
            if example:
                trace_id, span_id = int(example["trace_id"], 16), int(example["span_id"], 16)
                self._examples[incident["id"]] = (trace_id, span_id)
                if len(self._examples) > 10_000:
                    self._examples.popitem(last=False)
        else:
            for incident_id in message.get("incident_ids", ()):
                if incident_id in self._examples:
                    trace_id, span_id = self._examples[incident_id]
                    break
        attributes: dict[str, Any] = {"spanwatch.seq": message["seq"]}
        if incident is not None:
            attributes.update(
                {
                    "spanwatch.incident.id": incident["id"],
                    "spanwatch.incident.severity": severity,
                    "spanwatch.incident.pattern": incident["pattern"],
                    "service.name": incident["service"],
                }
            )
            for name, value in (incident.get("resource") or {}).items():
                attributes[name] = value  # service.namespace, deployment.environment.name
        if "analysis_id" in message:
            attributes["spanwatch.analysis.id"] = message["analysis_id"]
        self._logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                event_name=f"spanwatch.{kind}",
                body=_clean(message),
                attributes=attributes,
                severity_number=_SEVERITY[severity] if incident else SeverityNumber.INFO,
                context=_span_context(trace_id, span_id),
            )
        )

    def flush(self, timeout: float = 5.0) -> bool:
        return bool(self._provider.force_flush(int(timeout * 1000)))

    def shutdown(self) -> None:
        self._provider.shutdown()


def _span_context(trace_id: int, span_id: int) -> Context | None:
    """A context whose current span is the incident's example span, so the record links to it."""
    if not trace_id or not span_id:
        return None
    span = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return set_span_in_context(NonRecordingSpan(span))


def _clean(value: Any) -> Any:
    """An OTel AnyValue: maps, lists and scalars without None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value if v is not None]
    return value
