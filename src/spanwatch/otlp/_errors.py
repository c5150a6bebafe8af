"""Errors of the OTLP receivers. Each one maps to one gRPC status and one HTTP status."""

from __future__ import annotations

from spanwatch.errors import SpanwatchError


class ReceiverError(SpanwatchError):
    """A request the receivers answer with an error status instead of a response."""

    grpc_code = "INTERNAL"
    http_status = 500


class MalformedPayload(ReceiverError):
    """The body could not be decoded: INVALID_ARGUMENT / 400."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 400


class PayloadTooLarge(ReceiverError):
    """The body exceeds the size limit once decompressed: RESOURCE_EXHAUSTED / 413."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413


class Overloaded(ReceiverError):
    """The processing queue is full; the sender should retry: UNAVAILABLE / 503 + Retry-After."""

    grpc_code = "UNAVAILABLE"
    http_status = 503

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthenticated(ReceiverError):
    """No bearer token, or the wrong one: UNAUTHENTICATED / 401."""

    grpc_code = "UNAUTHENTICATED"
    http_status = 401
