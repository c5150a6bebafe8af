"""OTLP/HTTP: ``POST /v1/traces`` (binary protobuf or JSON, optionally gzip) on aiohttp.

Failed requests get a ``google.rpc.Status`` body in the request's own encoding, as the OTLP
specification asks. Decompression is done here, bounded, so a small gzip bomb cannot inflate
past the size limit.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from spanwatch.config import BearerToken

from ._decode import encode_response, encode_status
from ._errors import MalformedPayload, Overloaded, PayloadTooLarge, ReceiverError, Unauthenticated
from ._ingest import Ingest

TRANSPORT = "http"
PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPE = "application/json"
_CHUNK = 1 << 16

# google.rpc.Code numbers for the Status bodies.
_RPC_CODES = {
    "INVALID_ARGUMENT": 3,
    "RESOURCE_EXHAUSTED": 8,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
    "INTERNAL": 13,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UnsupportedMediaType(ReceiverError):
    grpc_code = "INVALID_ARGUMENT"
    http_status = 415


class HttpReceiver:
    """Routes for the OTLP/HTTP trace endpoint; the daemon mounts them on its HTTP app."""

    def __init__(self, ingest: Ingest, max_body: int) -> None:
        self._ingest = ingest
        self._max_body = max_body

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/traces", self.export)]

    async def export(self, request: web.Request) -> web.Response:
        is_json = request.content_type == JSON_TYPE
        # An unknown Content-Type has no encoding of its own to answer in: use JSON.
        answer_json = is_json or request.content_type not in PROTOBUF_TYPES
        try:
            if answer_json and not is_json:
                raise UnsupportedMediaType(
                    f"unsupported Content-Type {request.content_type!r}: "
                    "send application/x-protobuf or application/json"
                )
            body = await self._read_body(request)
        except ReceiverError as exc:
            self._ingest.count_failure(TRANSPORT, exc)
            return error_response(exc, as_json=answer_json)
        try:
            refused, reason = self._ingest.export(body, TRANSPORT, is_json)
        except ReceiverError as exc:  # counted by Ingest
            return error_response(exc, as_json=is_json)
        return web.Response(
            body=encode_response(refused, reason, is_json),
            content_type=JSON_TYPE if is_json else "application/x-protobuf",
        )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._max_body
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"request body over the {limit}-byte limit")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise UnsupportedMediaType(
                f"unsupported Content-Encoding {encoding!r}: send gzip or no encoding"
            )
        inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        parts: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            if inflater is not None:
                chunk = _inflate(inflater, chunk, limit - size + 1)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over the {limit}-byte limit")
            parts.append(chunk)
        if inflater is not None and not inflater.eof:
            raise MalformedPayload("invalid gzip body: the stream is truncated")
        return b"".join(parts)


def _inflate(inflater: zlib._Decompress, chunk: bytes, room: int) -> bytes:
    try:
        out = inflater.decompress(chunk, room)
    except zlib.error as exc:
        raise MalformedPayload(f"invalid gzip body: {exc}") from exc
    if inflater.unconsumed_tail:
        raise PayloadTooLarge("request body over the size limit once decompressed")
    return out


def error_response(exc: ReceiverError, as_json: bool) -> web.Response:
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return web.Response(
        status=exc.http_status,
        body=encode_status(_RPC_CODES.get(exc.grpc_code, 2), str(exc), as_json),
        content_type=JSON_TYPE if as_json else "application/x-protobuf",
        headers=headers,
    )


def auth_middleware(token: BearerToken, ingest: Ingest, open_paths: Iterable[str]) -> Middleware:
    """Every path but ``open_paths`` (health probes) wants ``Authorization: Bearer <token>``."""
    exempt = frozenset(open_paths)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt or token.allows(request.headers.get("Authorization")):
            return await handler(request)
        exc = Unauthenticated("missing or invalid bearer token in the Authorization header")
        ingest.count_failure(TRANSPORT, exc)
        response = error_response(exc, as_json=request.content_type not in PROTOBUF_TYPES)
        response.headers["WWW-Authenticate"] = 'Bearer realm="spanwatch"'
        return response

    return middleware
