from __future__ import annotations

import json

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from spanwatch.model import SpanKind, StatusCode
from spanwatch.otlp import MalformedPayload, decode_request, parse_json, parse_protobuf
from tests.otlp_payloads import PARENT_ID, SPAN_ID, START, TRACE_ID, attr, request, span


def test_fields_and_semantic_attributes_are_decoded() -> None:
    """Every column the detector uses is filled from the span, its resource and its events."""
    pb = span(
        parent_span_id=PARENT_ID,
        kind=3,
        status=Status(code=2, message="timeout"),
        attributes={
            "http.route": "/cart/{id}",
            "http.request.method": "GET",
            "http.response.status_code": 503,
            "rpc.system": "grpc",
            "rpc.service": "Cart",
            "rpc.method": "Get",
            "db.system": "postgresql",
            "db.operation.name": "SELECT",
            "messaging.system": "kafka",
            "server.address": "db.internal",
            "peer.service": "postgres",
            "unrelated": "x",
        },
    )
    event = pb.events.add(name="exception", time_unix_nano=START + 1)
    event.attributes.extend(
        [attr("exception.type", "TimeoutError"), attr("exception.message", "deadline exceeded")]
    )
    result = decode_request(request(pb, service="cart", version="1.2.3"))
    assert result.refused == 0
    (row,) = result.batch.rows()
    assert row.trace_id == TRACE_ID and row.span_id == SPAN_ID and row.parent_span_id == PARENT_ID
    assert (row.service, row.service_version, row.name) == ("cart", "1.2.3", "GET /cart")
    assert row.kind == SpanKind.CLIENT
    assert row.duration_ns == 5_000_000
    assert (row.status_code, row.status_message) == (StatusCode.ERROR, "timeout")
    assert (row.exception_type, row.exception_message) == ("TimeoutError", "deadline exceeded")
    assert (row.http_route, row.http_method, row.http_status_code) == ("/cart/{id}", "GET", 503)
    assert (row.rpc_system, row.rpc_service, row.rpc_method) == ("grpc", "Cart", "Get")
    assert (row.db_system, row.db_operation) == ("postgresql", "SELECT")
    assert (row.messaging_system, row.server_address, row.peer_service) == (
        "kafka",
        "db.internal",
        "postgres",
    )


def test_older_semantic_convention_names_fill_the_same_columns() -> None:
    """http.method / http.status_code / net.peer.name still work; the current name wins."""
    old = span(
        attributes={
            "http.method": "POST",
            "http.status_code": "500",
            "net.peer.name": "cache",
            "db.operation": "GET",
        }
    )
    both = span(
        span_id=b"\x01" * 8,
        attributes={
            "http.method": "POST",
            "http.request.method": "PUT",
            "http.status_code": 500,
            "http.response.status_code": 404,
        },
    )
    rows = decode_request(request(old, both)).batch.rows()
    assert (rows[0].http_method, rows[0].http_status_code) == ("POST", 500)
    assert (rows[0].net_peer_name, rows[0].db_operation) == ("cache", "GET")
    assert (rows[1].http_method, rows[1].http_status_code) == ("PUT", 404)


def test_missing_service_name_is_unknown_service() -> None:
    """A resource without service.name gets the SDKs' default name."""
    (row,) = decode_request(request(span(), service=None)).batch.rows()
    assert row.service == "unknown_service"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"trace_id": b""}, "invalid trace_id"),
        ({"trace_id": bytes(16)}, "invalid trace_id"),
        ({"trace_id": b"\x01" * 8}, "invalid trace_id"),
        ({"span_id": b""}, "invalid span_id"),
        ({"span_id": bytes(8)}, "invalid span_id"),
        ({"parent_span_id": b"\x01" * 3}, "invalid parent_span_id"),
        ({"start_time_unix_nano": 0}, "missing start time"),
        ({"end_time_unix_nano": START - 1}, "end time before start time"),
    ],
)
def test_unusable_spans_are_refused_with_a_reason(bad: dict[str, object], reason: str) -> None:
    """A span with missing ids or times is refused; the good spans beside it are kept."""
    good = span(span_id=b"\x02" * 8)
    result = decode_request(request(good, span(**bad)))
    assert len(result.batch) == 1 and result.batch.span_id == [b"\x02" * 8]
    assert result.refused == 1
    assert result.reason == f"refused 1 span(s): 1 with {reason}"


def test_refusal_reasons_are_summarised() -> None:
    """Several refusals are counted per reason in one message."""
    result = decode_request(
        request(span(trace_id=b""), span(trace_id=b""), span(end_time_unix_nano=1))
    )
    assert result.refused == 3
    assert result.reason == (
        "refused 3 span(s): 1 with end time before start time, 2 with invalid trace_id"
    )


def test_zero_length_span_is_accepted() -> None:
    """end == start is a valid (instant) span."""
    assert len(decode_request(request(span(end_time_unix_nano=START))).batch) == 1


def _json_request(span_fields: dict[str, object]) -> bytes:
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]
                },
                "scopeSpans": [{"scope": {"name": "t"}, "spans": [span_fields]}],
            }
        ]
    }
    return json.dumps(document).encode()


@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_json_hex_ids_in_either_case(case: object) -> None:
    """OTLP/JSON ids are hex, upper or lower case."""
    body = _json_request(
        {
            "traceId": case(TRACE_ID.hex()),
            "spanId": case(SPAN_ID.hex()),  # type: ignore[operator]
            "parentSpanId": case(PARENT_ID.hex()),  # type: ignore[operator]
            "name": "x",
            "kind": 2,
            "startTimeUnixNano": str(START),
            "endTimeUnixNano": str(START + 10),
        }
    )
    (row,) = decode_request(parse_json(body)).batch.rows()
    assert (row.trace_id, row.span_id, row.parent_span_id) == (TRACE_ID, SPAN_ID, PARENT_ID)


def test_json_numbers_strings_enums_and_unknown_fields() -> None:
    """Timestamps as strings or numbers, enums as integers or names, unknown fields ignored."""
    body = _json_request(
        {
            "traceId": TRACE_ID.hex(),
            "spanId": SPAN_ID.hex(),
            "name": "x",
            "kind": "SPAN_KIND_CLIENT",
            "startTimeUnixNano": START,
            "endTimeUnixNano": str(START + 42),
            "status": {"code": 2, "message": "bad"},
            "someFutureField": {"nested": [1, 2]},
            "attributes": [{"key": "http.response.status_code", "value": {"intValue": "502"}}],
            "events": [
                {
                    "name": "exception",
                    "attributes": [{"key": "exception.type", "value": {"stringValue": "IOError"}}],
                }
            ],
        }
    )
    (row,) = decode_request(parse_json(body)).batch.rows()
    assert row.kind == SpanKind.CLIENT
    assert row.duration_ns == 42
    assert (row.status_code, row.status_message) == (StatusCode.ERROR, "bad")
    assert row.http_status_code == 502
    assert row.exception_type == "IOError"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (_json_request({"traceId": "zz" * 16, "spanId": SPAN_ID.hex()}), "is not hex"),
        (b'{"resourceSpans": 5}', "not a valid OTLP/JSON"),
        (_json_request({"traceId": TRACE_ID.hex(), "startTimeUnixNano": "soon"}), "not a valid"),
    ],
)
def test_malformed_json_is_rejected_with_a_reason(body: bytes, message: str) -> None:
    """Unparseable OTLP/JSON raises MalformedPayload naming what is wrong."""
    with pytest.raises(MalformedPayload, match=message):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff", request(span()).SerializeToString()[:-3], b"\x0a\xff\x01"],
)
def test_malformed_protobuf_is_rejected(body: bytes) -> None:
    """Garbage or truncated protobuf raises MalformedPayload."""
    with pytest.raises(MalformedPayload, match="not a valid ExportTraceServiceRequest"):
        parse_protobuf(body)


def test_decoding_does_not_mutate_the_request() -> None:
    """Decoding reads the message only."""
    req = request(span(), span(trace_id=b""))
    before = req.SerializeToString()
    decode_request(req)
    assert req.SerializeToString() == before


def test_encode_then_decode_is_the_identity() -> None:
    """A simulated batch encoded to OTLP decodes back to the same spans."""
    from spanwatch.otlp import encode_batch
    from spanwatch.sim import Simulator

    (batch,) = list(Simulator(seed=1, rate=50).batches(1))
    request = parse_protobuf(encode_batch(batch).SerializeToString())
    result = decode_request(request)
    assert result.refused == 0
    assert sorted(result.batch.rows(), key=lambda s: s.span_id) == sorted(
        batch.rows(), key=lambda s: s.span_id
    )
