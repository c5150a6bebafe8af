"""OTLP in: decoding (protobuf and JSON, gzip) into span batches, and the gRPC and HTTP receivers.

This package is the only place protobuf types of OTLP appear; everything past it sees
:class:`spanwatch.model.SpanBatch`.
"""

from ._decode import (
    DecodeResult,
    decode_protobuf,
    decode_request,
    parse_json,
    parse_protobuf,
    set_identity,
)
from ._encode import encode_batch
from ._errors import (
    MalformedPayload,
    Overloaded,
    PayloadTooLarge,
    ReceiverError,
    Unauthenticated,
)
from ._grpc import TRACE_SERVICE, GrpcReceiver
from ._http import HttpReceiver, auth_middleware
from ._ingest import BatchSink, Ingest
from ._memory import MemoryGuard, release_free_memory, resident_bytes
from ._metrics import ReceiverMetrics

__all__ = [
    "TRACE_SERVICE",
    "BatchSink",
    "DecodeResult",
    "GrpcReceiver",
    "HttpReceiver",
    "Ingest",
    "MalformedPayload",
    "MemoryGuard",
    "Overloaded",
    "PayloadTooLarge",
    "ReceiverError",
    "ReceiverMetrics",
    "Unauthenticated",
    "auth_middleware",
    "decode_protobuf",
    "decode_request",
    "encode_batch",
    "parse_json",
    "parse_protobuf",
    "release_free_memory",
    "resident_bytes",
    "set_identity",
]
