"""The WebSocket server (``websockets``): ``/events`` for subscribers, ``/`` for the live page.

Handshake: ``/events?since=SEQ&min_severity=N&service=NAME&environment=ENV&namespace=NS&token=T``
(the filters: see :class:`Filter`; an analysis passes when one of its incidents does). The token
may also come as ``Authorization: Bearer T`` (browsers cannot set that header on a WebSocket,
hence the query parameter). A browser's Origin must be the page's own or on
``publish.allowed_origins``.

Client → server messages are JSON objects: ``{"type": "rate", "analysis_id", "rating",
"correction"?, "request_id"?}`` and ``{"type": "ping"}``. Replies (``rate.ok``, ``rate.error``,
``pong``) carry the ``seq`` of the last message the client was sent, so seq never goes back
and live messages keep their numbering without gaps. Anything else closes the connection with
a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from spanwatch.config import BearerToken, ListenAddress
from spanwatch.errors import SpanwatchError
from spanwatch.model import InvalidRating, StorageUnavailable, UnknownAnalysis

from ._hub import Filter, Hub, SubscriberTooSlow, Subscription

log = structlog.get_logger("spanwatch.ws")

RateFn = Callable[[Any, str], Awaitable[dict[str, Any]]]
# A read-only JSON endpoint for the page: query parameters in, (HTTP status, body) out.
Endpoint = Callable[[Mapping[str, str]], Awaitable[tuple[int, Any]]]

# Close codes (RFC 6455 §7.4.1)
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


class BadRequest(SpanwatchError, ValueError):
    pass


def parse_query(path: str) -> tuple[int | None, Filter, str]:
    """(since, filter, token) from the handshake path; BadRequest names the bad parameter."""
    query = parse_qs(urlsplit(path).query)

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    since = one("since")
    if since is not None and (not since.isdigit()):
        raise BadRequest(f"since must be a non-negative integer, not {since!r}")
    min_severity = one("min_severity") or "5"
    if min_severity not in {"1", "2", "3", "4", "5"}:
        raise BadRequest(f"min_severity must be 1 to 5, not {min_severity!r}")
    flt = Filter(
        int(min_severity),
        one("service") or "",
        environment=one("environment") or "",
        namespace=one("namespace") or "",
    )
    return (int(since) if since is not None else None), flt, one("token") or ""


class WebSocketServer:
    def __init__(
        self,
        hub: Hub,
        token: BearerToken,
        address: ListenAddress,
        rate: RateFn,
        allowed_origins: tuple[str, ...] = (),
        ping_interval: float = 20.0,
        ssl_context: ssl.SSLContext | None = None,
        endpoints: Mapping[str, Endpoint] | None = None,
        trace_url: str = "",
    ) -> None:
        self._hub = hub
        self._token = token
        self._address = address
        self._rate = rate
        self._allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._ping_interval = ping_interval
        self._ssl = ssl_context
        self._server: Server | None = None
        self._endpoints = dict(endpoints or {})
        page = resources.files("spanwatch.publish").joinpath("page.html").read_text("utf-8")
        self._page = page.replace(
            '<meta name="spanwatch-trace-url" content="">',
            f'<meta name="spanwatch-trace-url" content="{html.escape(trace_url, quote=True)}">',
        ).encode()
        self.port = 0

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._address.host,
            self._address.port,
            process_request=self._process_request,
            ping_interval=self._ping_interval or None,
            ping_timeout=self._ping_interval or None,
            max_size=64 * 1024,
            close_timeout=3,
            # One encoding per message for every subscriber: per-connection deflate would
            # multiply the fan-out cost by the number of subscribers.
            compression=None,
            server_header="spanwatch",
            ssl=self._ssl,
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        if path in ("/", "/index.html"):
            return _response(HTTPStatus.OK, self._page, "text/html; charset=utf-8")
        if path == "/healthz":
            return _response(HTTPStatus.OK, b'{"status": "ok"}', "application/json")
        if path in self._endpoints:
            return await self._endpoint(connection, request, self._endpoints[path])
        if path != "/events":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: try /events or /\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            return connection.respond(
                HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed (publish.allowed_origins)\n"
            )
        try:
            _, _, query_token = parse_query(request.path)
        except BadRequest as exc:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        header = request.headers.get("Authorization")
        if not (self._token.allows(header) or self._token.allows(f"Bearer {query_token}")):
            response = connection.respond(
                HTTPStatus.UNAUTHORIZED, "missing or invalid token (Authorization or ?token=)\n"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="spanwatch"'
            return response
        return None

    async def _endpoint(
        self, connection: ServerConnection, request: Request, endpoint: Endpoint
    ) -> Response:
        if request.headers.get("Upgrade"):
            return connection.respond(HTTPStatus.BAD_REQUEST, "a plain GET, not a WebSocket\n")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        header = request.headers.get("Authorization")
        if not (self._token.allows(header) or self._token.allows(f"Bearer {query.get('token')}")):
            response = connection.respond(
                HTTPStatus.UNAUTHORIZED, "missing or invalid token (Authorization or ?token=)\n"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="spanwatch"'
            return response
        try:
            status, body = await endpoint(query)
        except Exception:
            log.exception("page endpoint failed", path=urlsplit(request.path).path)
            status, body = 500, {"error": "internal error (see the daemon's log)"}
        return _response(
            HTTPStatus(status), json.dumps(body, ensure_ascii=False).encode(), "application/json"
        )

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.rstrip("/")
        if origin in self._allowed_origins or "*" in self._allowed_origins:
            return True
        # Same origin: the live page served by this very listener.
        return host is not None and urlsplit(origin).netloc == host

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        since, flt, _ = parse_query(connection.request.path)
        subscription = self._hub.subscribe(since, flt)
        try:
            if since is not None and since + 1 < self._hub.oldest_seq:
                await connection.send(
                    json.dumps(
                        {
                            "type": "replay.gap",
                            "seq": since,
                            "requested_since": since,
                            "oldest_available": self._hub.oldest_seq,
                            "message": f"messages {since + 1}..{self._hub.oldest_seq - 1} have "
                            "left the replay ring and cannot be resent; replay starts at the "
                            "oldest still held",
                        }
                    )
                )
            sender = asyncio.create_task(self._send_loop(connection, subscription))
            receiver = asyncio.create_task(self._receive_loop(connection, subscription))
            subscription.on_overflow = sender.cancel
            subscription.direct = _direct_writer(connection)
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sender, receiver):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if subscription.overflowed:
                # The close frame waits behind what the client has not read; close_timeout
                # bounds that wait before the TCP connection is dropped.
                await connection.close(
                    TRY_AGAIN_LATER, str(SubscriberTooSlow(subscription.last_seq))
                )
        finally:
            subscription.close()

    async def _send_loop(self, connection: ServerConnection, subscription: Subscription) -> None:
        with contextlib.suppress(SubscriberTooSlow, ConnectionClosed):
            while True:
                await connection.send(await subscription.next())

    async def _receive_loop(self, connection: ServerConnection, subscription: Subscription) -> None:
        try:
            async for raw in connection:
                if isinstance(raw, bytes):
                    await connection.close(UNSUPPORTED_DATA, "binary messages are not accepted")
                    return
                try:
                    message = json.loads(raw)
                except ValueError:
                    await connection.close(INVALID_PAYLOAD, "messages must be JSON objects")
                    return
                if not isinstance(message, dict):
                    await connection.close(INVALID_PAYLOAD, "messages must be JSON objects")
                    return
                reply = await self._answer(message, connection)
                if reply is None:
                    await connection.close(
                        POLICY_VIOLATION, f"unknown message type {str(message.get('type'))[:40]!r}"
                    )
                    return
                reply["seq"] = subscription.last_seq
                await connection.send(json.dumps(reply, ensure_ascii=False))
        except ConnectionClosed:
            pass

    async def _answer(
        self, message: dict[str, Any], connection: ServerConnection
    ) -> dict[str, Any] | None:
        kind = message.get("type")
        request_id = message.get("request_id")
        if kind == "ping":
            return {"type": "pong", "request_id": request_id}
        if kind != "rate":
            return None
        try:
            rating = await self._rate(message, f"ws:{connection.remote_address[0]}")
        except (InvalidRating, UnknownAnalysis, StorageUnavailable) as exc:
            status = (
                404
                if isinstance(exc, UnknownAnalysis)
                else 503
                if isinstance(exc, StorageUnavailable)
                else 400
            )
            return {
                "type": "rate.error",
                "request_id": request_id,
                "status": status,
                "error": str(exc),
            }
        return {"type": "rate.ok", "request_id": request_id, "rating": rating}


# Above this many unsent bytes a connection counts as backed up: messages queue instead.
WRITE_HIGH_WATER = 64 * 1024


def _direct_writer(connection: ServerConnection) -> Callable[[str], bool]:
    def write(text: str) -> bool:
        if connection.state is not State.OPEN:
            return False
        if connection.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            return False
        broadcast((connection,), text)  # a synchronous write, no task switch
        return True

    return write


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            (
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self' ws: wss:; img-src data:",
            ),
        ]
    )
    return Response(status.value, status.phrase, headers, body)
