"""Raw OTLP clients for tests: send exact bytes and see exactly what the daemon answers."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class GrpcAnswer:
    code: grpc.StatusCode
    details: str
    body: bytes = b""
    trailers: dict[str, Any] = field(default_factory=dict)

    def retry_delay(self) -> float | None:
        raw = self.trailers.get("grpc-status-details-bin")
        if raw is None:
            return None
        status = status_pb2.Status.FromString(raw)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.ToNanoseconds() / 1e9)
        return None


def grpc_export(
    target: str, body: bytes, token: str | None = None, gzip_request: bool = False
) -> GrpcAnswer:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", 256 << 20)]
    ) as channel:
        call = channel.unary_unary(EXPORT_METHOD)
        try:
            response, info = call.with_call(
                body,
                timeout=20,
                metadata=metadata,
                compression=grpc.Compression.Gzip if gzip_request else None,
            )
        except grpc.RpcError as exc:
            return GrpcAnswer(
                exc.code(), exc.details() or "", trailers=dict(exc.trailing_metadata() or ())
            )
        return GrpcAnswer(info.code(), "", response, dict(info.trailing_metadata() or ()))


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def http_request(
    url: str,
    body: bytes | None = None,
    content_type: str = "application/x-protobuf",
    gzip_body: bool = False,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> HttpAnswer:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if gzip_body and body is not None:
        body = gzip.compress(body)
        all_headers["Content-Encoding"] = "gzip"
    req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return HttpAnswer(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, dict(exc.headers), exc.read())
