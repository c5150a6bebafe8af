"""OTLP trace payloads (protobuf or JSON) into :class:`~spanwatch.model.SpanBatch`.

The only module where protobuf types appear. Spans that cannot be used are refused one by one
(OTLP partial success); a payload that cannot be parsed at all raises :class:`MalformedPayload`.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from spanwatch.model import (
    IDENTITY_ATTRIBUTES,
    INSTANCE_ATTRIBUTES,
    RESOURCE_ALIASES,
    SEMCONV_COLUMNS,
    SpanBatch,
    make_scope,
    make_source,
)

from ._errors import MalformedPayload

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
UNKNOWN_SERVICE = "unknown_service"

# attribute key -> (column index in _SEMCONV_NAMES, rank: lower wins when both old and new names
# are present)
_SEMCONV_NAMES = tuple(SEMCONV_COLUMNS)
_SEMCONV_KEYS: dict[str, tuple[int, int]] = {
    key: (col, rank)
    for col, name in enumerate(_SEMCONV_NAMES)
    for rank, key in enumerate(SEMCONV_COLUMNS[name])
}
_INT_COLUMNS = frozenset(i for i, n in enumerate(_SEMCONV_NAMES) if n == "http_status_code")
_CORE_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "service_version",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "status_code",
    "status_message",
    "exception_type",
    "exception_message",
    "scope",
    "source",
)
_REFUSALS = (
    "invalid trace_id",
    "invalid span_id",
    "invalid parent_span_id",
    "missing start time",
    "end time before start time",
)

try:  # the C fast path, when the install could build it
    from . import _wire
except ImportError:  # pragma: no cover - depends on the build
    _wire = None  # type: ignore[assignment]
else:
    (_int_column,) = _INT_COLUMNS
    _wire.configure(
        [(key, col, rank) for key, (col, rank) in _SEMCONV_KEYS.items()],
        len(_SEMCONV_NAMES),
        _int_column,
    )

NATIVE = _wire is not None

# resource attribute -> (slot in the scope, rank: lower wins when an old and a new name are set)
_identity: dict[str, tuple[int, int]] = {}


def set_identity(attributes: tuple[str, ...] = IDENTITY_ATTRIBUTES) -> None:
    """The resource attributes that, with ``service.name``, make a service's identity (the
    ``scope`` column); older names of them (``deployment.environment``) count too."""
    table = {name: (slot, 0) for slot, name in enumerate(attributes)}
    for old, new in RESOURCE_ALIASES.items():
        if new in table and old not in table:
            table[old] = (table[new][0], 1)
    _identity.clear()
    _identity.update(table)
    if NATIVE:
        _wire.configure_resource(
            [(key, slot, rank) for key, (slot, rank) in table.items()],
            len(attributes),
            list(INSTANCE_ATTRIBUTES),
        )


set_identity()


@dataclass(slots=True)
class DecodeResult:
    """What a request held: the accepted spans and, for the refused ones, why."""

    batch: SpanBatch
    refused: int
    reason: str


def decode_protobuf(body: bytes, native: bool = NATIVE) -> DecodeResult:
    """A protobuf request body into columns: by the C fast path when it can take the body,
    else (and for every body it is unsure of) by protobuf, which also words the errors."""
    if native:
        fast = _wire.decode(body)
        if fast is not None:
            core, semconv, refused = fast
            columns = dict(zip(_CORE_COLUMNS, core, strict=True))
            columns.update(zip(_SEMCONV_NAMES, semconv, strict=True))
            batch = SpanBatch(**columns)  # type: ignore[arg-type]
            return _result(batch, Counter(dict(zip(_REFUSALS, refused, strict=True))))
    return decode_request(parse_protobuf(body))


def count_spans(body: bytes) -> int | None:
    """How many spans a protobuf request holds, without decoding them (about 50× cheaper);
    None when that cannot be told cheaply (no C fast path, or a body it is unsure of)."""
    return _wire.count_spans(body) if NATIVE else None


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise MalformedPayload(f"not a valid ExportTraceServiceRequest protobuf: {exc}") from exc
    return request


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: ids are hex (either case), enums may be integers, unknown fields are ignored."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPayload(f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedPayload("an OTLP/JSON request must be a JSON object")
    _hex_ids_to_base64(document)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise MalformedPayload(f"not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from exc
    return request


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    # protobuf's JSON mapping reads bytes as base64; OTLP/JSON writes trace and span ids as hex.
    for r, resource_spans in enumerate(_items(document, "resourceSpans", "resource_spans")):
        for s, scope_spans in enumerate(_items(resource_spans, "scopeSpans", "scope_spans")):
            for i, span in enumerate(_items(scope_spans, "spans")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                _convert_ids(span, where)
                for j, link in enumerate(_items(span, "links")):
                    _convert_ids(link, f"{where}.links[{j}]")


def _items(obj: Any, *names: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        return
    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError as exc:
                raise MalformedPayload(f"{where}.{key}: {value!r} is not hex") from exc


def decode_request(request: ExportTraceServiceRequest) -> DecodeResult:
    """Flatten a request into columns, refusing spans with missing ids or times."""
    batch = SpanBatch()
    trace_ids, span_ids, parents = batch.trace_id, batch.span_id, batch.parent_span_id
    services, versions, names, kinds = batch.service, batch.service_version, batch.name, batch.kind
    starts, ends = batch.start_ns, batch.end_ns
    status_codes, status_messages = batch.status_code, batch.status_message
    exc_types, exc_messages = batch.exception_type, batch.exception_message
    semconv = [getattr(batch, name) for name in _SEMCONV_NAMES]
    n_semconv = len(semconv)
    keys = _SEMCONV_KEYS
    refusals: Counter[str] = Counter()

    scopes, sources = batch.scope, batch.source
    for resource_spans in request.resource_spans:
        service, version, scope, source = _service_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    refusals["invalid trace_id"] += 1
                    continue
                if len(span_id) != 8 or span_id == _ZERO_SPAN:
                    refusals["invalid span_id"] += 1
                    continue
                if parent and len(parent) != 8:
                    refusals["invalid parent_span_id"] += 1
                    continue
                if start == 0:
                    refusals["missing start time"] += 1
                    continue
                if end < start:
                    refusals["end time before start time"] += 1
                    continue

                values: list[Any] = [""] * n_semconv
                ranks = [99] * n_semconv
                for kv in span.attributes:
                    hit = keys.get(kv.key)
                    if hit is not None:
                        col, rank = hit
                        if rank < ranks[col]:
                            ranks[col] = rank
                            values[col] = _scalar(kv.value)
                for col in _INT_COLUMNS:
                    values[col] = _to_int(values[col])

                exc_type = exc_message = ""
                if span.events:
                    for event in span.events:
                        if event.name == "exception":
                            for kv in event.attributes:
                                if kv.key == "exception.type":
                                    exc_type = kv.value.string_value
                                elif kv.key == "exception.message":
                                    exc_message = kv.value.string_value
                            break

                trace_ids.append(trace_id)
                span_ids.append(span_id)
                parents.append(parent)
                services.append(service)
                versions.append(version)
                names.append(span.name)
                kinds.append(span.kind)
                starts.append(start)
                ends.append(end)
                status = span.status
                status_codes.append(status.code)
                status_messages.append(status.message)
                exc_types.append(exc_type)
                exc_messages.append(exc_message)
                scopes.append(scope)
                sources.append(source)
                for col in range(n_semconv):
                    semconv[col].append(values[col])

    return _result(batch, refusals)


def _result(batch: SpanBatch, refusals: Counter[str]) -> DecodeResult:
    refused = sum(refusals.values())
    reason = ""
    if refused:
        detail = ", ".join(f"{n} with {why}" for why, n in sorted(refusals.items()) if n)
        reason = f"refused {refused} span(s): {detail}"
    return DecodeResult(batch, refused, reason)


def _service_of(attributes: Any) -> tuple[str, str, str, str]:
    """(service, version, scope, source) of a resource; the last of a repeated key wins."""
    service, version = UNKNOWN_SERVICE, ""
    n_slots = 1 + max((slot for slot, _ in _identity.values()), default=-1)
    values = [""] * n_slots
    ranks = [99] * n_slots
    instance, instance_rank = "", 99
    for kv in attributes:
        key = kv.key
        if key == "service.name":
            service = kv.value.string_value or UNKNOWN_SERVICE
        elif key == "service.version":
            version = kv.value.string_value
        elif (hit := _identity.get(key)) is not None:
            slot, rank = hit
            if rank <= ranks[slot]:
                ranks[slot] = rank
                values[slot] = kv.value.string_value
        elif key in INSTANCE_ATTRIBUTES:
            rank = INSTANCE_ATTRIBUTES.index(key)
            if rank <= instance_rank:
                instance, instance_rank = kv.value.string_value, rank
    scope = make_scope(values)
    return service, version, scope, make_source(service, scope, instance)


def _scalar(value: Any) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return repr(value.double_value)
    return ""


def _to_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def encode_response(refused: int, reason: str, as_json: bool) -> bytes:
    """An ExportTraceServiceResponse, with partial success when spans were refused."""
    response = ExportTraceServiceResponse()
    if refused:
        response.partial_success.rejected_spans = refused
        response.partial_success.error_message = reason
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def encode_status(code: int, message: str, as_json: bool) -> bytes:
    """A google.rpc.Status body, as OTLP/HTTP returns with a failed request."""
    status = status_pb2.Status(code=code, message=message)
    if as_json:
        return json_format.MessageToJson(status, indent=None).encode()
    body: bytes = status.SerializeToString()
    return body
