"""Bad input, size limits, auth and health on both transports of a running daemon."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.conftest import RunningDaemon
from tests.otlp_client import grpc_export, http_request
from tests.otlp_payloads import SPAN_ID, TRACE_ID, many_spans, request, span

GOOD = request(span()).SerializeToString()
TRUNCATED = GOOD[:-4]
GARBAGE = b"\xff\xfe\xfd\xfc\x00 this is not protobuf"


@pytest.mark.parametrize("body", [GARBAGE, TRUNCATED], ids=["garbage", "truncated"])
def test_grpc_malformed_is_invalid_argument(daemon: RunningDaemon, body: bytes) -> None:
    """Undecodable protobuf over gRPC: INVALID_ARGUMENT with a reason, and nothing counted."""
    answer = grpc_export(daemon.grpc_target, body)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest" in answer.details
    assert daemon.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 0
    assert (
        daemon.metric(
            "spanwatch_receiver_requests_total", transport="grpc", outcome="MalformedPayload"
        )
        == 1
    )
    # The daemon keeps serving.
    assert grpc_export(daemon.grpc_target, GOOD, gzip_request=True).code == grpc.StatusCode.OK
    assert daemon.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 1


def test_grpc_over_size_limit_is_resource_exhausted(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """A message over receiver.max_request_size gets RESOURCE_EXHAUSTED."""
    d = make_daemon(**{"receiver.max_request_size": "64KiB"})
    big = many_spans(2000).SerializeToString()
    assert len(big) > 64 * 1024
    answer = grpc_export(d.grpc_target, big)
    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_export(d.grpc_target, GOOD).code == grpc.StatusCode.OK


def test_grpc_partial_success_reports_refused_spans(daemon: RunningDaemon) -> None:
    """Spans without ids are refused through partial success; the rest are accepted."""
    body = request(span(), span(span_id=b""), span(trace_id=bytes(16))).SerializeToString()
    answer = grpc_export(daemon.grpc_target, body)
    assert answer.code == grpc.StatusCode.OK
    response = ExportTraceServiceResponse.FromString(answer.body)
    assert response.partial_success.rejected_spans == 2
    assert "invalid span_id" in response.partial_success.error_message
    assert "invalid trace_id" in response.partial_success.error_message
    assert daemon.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 1
    assert daemon.metric("spanwatch_receiver_refused_spans_total", transport="grpc") == 2


def _status(answer_body: bytes, as_json: bool) -> tuple[int, str]:
    if as_json:
        doc = json.loads(answer_body)
        return int(doc["code"]), str(doc["message"])
    status = status_pb2.Status.FromString(answer_body)
    return status.code, status.message


@pytest.mark.parametrize(
    ("body", "ctype", "gz", "reason"),
    [
        (GARBAGE, "application/x-protobuf", False, "not a valid ExportTraceServiceRequest"),
        (TRUNCATED, "application/x-protobuf", True, "not a valid ExportTraceServiceRequest"),
        (b'{"resourceSpans": [', "application/json", False, "not valid JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            "application/json",
            True,
            "is not hex",
        ),
    ],
    ids=["garbage", "truncated-gzip", "bad-json", "bad-hex-gzip"],
)
def test_http_malformed_is_400_with_status_in_request_encoding(
    daemon: RunningDaemon, body: bytes, ctype: str, gz: bool, reason: str
) -> None:
    """A malformed body gets 400 and a google.rpc.Status in the request's own encoding."""
    answer = http_request(f"{daemon.http_url}/v1/traces", body, ctype, gzip_body=gz)
    assert answer.status == 400
    assert answer.headers["Content-Type"].startswith(ctype)
    code, message = _status(answer.body, ctype == "application/json")
    assert code == 3 and reason in message
    assert daemon.metric("spanwatch_receiver_accepted_spans_total", transport="http") == 0
    ok = http_request(f"{daemon.http_url}/v1/traces", GOOD)
    assert ok.status == 200
    assert daemon.metric("spanwatch_receiver_accepted_spans_total", transport="http") == 1


def test_http_broken_gzip_is_400(daemon: RunningDaemon) -> None:
    """A body that claims gzip but is not, or is cut short, gets 400."""
    url = f"{daemon.http_url}/v1/traces"
    for body in (b"not gzip at all", gzip.compress(GOOD)[:-8]):
        answer = http_request(url, body, headers={"Content-Encoding": "gzip"})
        assert answer.status == 400
        assert "invalid gzip body" in _status(answer.body, as_json=False)[1]


def test_http_wrong_content_type_is_415(daemon: RunningDaemon) -> None:
    """Content types other than protobuf and JSON get 415, and so do unknown encodings."""
    url = f"{daemon.http_url}/v1/traces"
    answer = http_request(url, GOOD, "text/plain")
    assert answer.status == 415
    assert "unsupported Content-Type 'text/plain'" in json.loads(answer.body)["message"]
    answer = http_request(url, GOOD, headers={"Content-Encoding": "br"})
    assert answer.status == 415
    assert "unsupported Content-Encoding 'br'" in _status(answer.body, as_json=False)[1]


def test_http_over_size_limit_is_413_also_after_decompression(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """413 for a large body, and for a small gzip body that inflates past the limit."""
    d = make_daemon(**{"receiver.max_request_size": "64KiB"})
    url = f"{d.http_url}/v1/traces"
    big = many_spans(2000).SerializeToString()
    assert http_request(url, big).status == 413
    bomb = gzip.compress(b"\x00" * (10 << 20))
    assert len(bomb) < 64 * 1024
    assert http_request(url, bomb, headers={"Content-Encoding": "gzip"}).status == 413
    assert http_request(url, GOOD, gzip_body=True).status == 200
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="http") == 1


def test_http_json_round_trip_with_partial_success(daemon: RunningDaemon) -> None:
    """OTLP/JSON in, an ExportTraceServiceResponse in JSON out, partial success included."""
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex().upper(),
                                "spanId": SPAN_ID.hex(),
                                "name": "ok",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": 1700000000000001000,
                            },
                            {
                                "traceId": TRACE_ID.hex(),
                                "spanId": "",
                                "name": "no id",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000000001000",
                            },
                        ]
                    }
                ],
            }
        ]
    }
    answer = http_request(
        f"{daemon.http_url}/v1/traces", json.dumps(doc).encode(), "application/json", gzip_body=True
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    body = json.loads(answer.body)
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert "invalid span_id" in body["partialSuccess"]["errorMessage"]
    (row,) = daemon.wait_for_spans(1)
    assert (row.service, row.name, row.duration_ns) == ("api", "ok", 1000)


def test_http_success_without_refusals_has_empty_partial_success(daemon: RunningDaemon) -> None:
    """A fully accepted request gets an empty ExportTraceServiceResponse."""
    answer = http_request(f"{daemon.http_url}/v1/traces", GOOD)
    assert answer.status == 200
    response = ExportTraceServiceResponse.FromString(answer.body)
    assert not response.HasField("partial_success")


def test_bearer_token_is_required_on_every_port(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """With auth.token set, gRPC answers UNAUTHENTICATED and HTTP 401 without the token."""
    d = make_daemon(**{"auth.token": "s3cret"})
    assert grpc_export(d.grpc_target, GOOD).code == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(d.grpc_target, GOOD, token="wrong").code == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(d.grpc_target, GOOD, token="s3cret").code == grpc.StatusCode.OK
    url = f"{d.http_url}/v1/traces"
    answer = http_request(url, GOOD)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert http_request(url, GOOD, headers={"Authorization": "Bearer nope"}).status == 401
    assert http_request(url, GOOD, headers={"Authorization": "Bearer s3cret"}).status == 200
    assert http_request(f"{d.http_url}/metrics", method="GET").status == 401
    # Health probes stay open so orchestrators can use them without the secret.
    assert http_request(f"{d.http_url}/healthz", method="GET").status == 200
    assert http_request(f"{d.http_url}/readyz", method="GET").status == 200
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 1
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="http") == 1
    assert (
        d.metric("spanwatch_receiver_requests_total", transport="grpc", outcome="Unauthenticated")
        == 2
    )


def test_grpc_health_and_http_probes(daemon: RunningDaemon) -> None:
    """grpc.health.v1 reports SERVING for the trace service; /healthz and /readyz answer 200."""
    with grpc.insecure_channel(daemon.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "opentelemetry.proto.collector.trace.v1.TraceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert (
        json.loads(http_request(f"{daemon.http_url}/readyz", method="GET").body)["status"]
        == "ready"
    )
    assert http_request(f"{daemon.http_url}/healthz", method="GET").status == 200


def test_metrics_exposition_has_the_contract_series(daemon: RunningDaemon) -> None:
    """/metrics serves Prometheus text with accepted and refused spans per transport."""
    grpc_export(daemon.grpc_target, GOOD)
    answer = http_request(f"{daemon.http_url}/metrics", method="GET")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    text = answer.body.decode()
    assert 'spanwatch_receiver_accepted_spans_total{transport="grpc"} 1.0' in text
    assert 'spanwatch_receiver_accepted_spans_total{transport="http"} 0.0' in text
    assert 'spanwatch_receiver_refused_spans_total{transport="grpc"} 0.0' in text
    assert 'spanwatch_receiver_requests_total{outcome="ok",transport="grpc"} 1.0' in text
    assert "spanwatch_receiver_received_bytes_total" in text
