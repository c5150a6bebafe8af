"""OTLP/gRPC: ``TraceService/Export`` on grpc.aio, with gRPC health checking beside it.

Requests arrive as raw bytes so that a malformed message is answered INVALID_ARGUMENT with a
reason (a deserializer failing inside grpc would answer INTERNAL). gzip is handled by grpc.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from spanwatch.config import TLS, BearerToken, ListenAddress

from ._decode import encode_response
from ._errors import Overloaded, ReceiverError, Unauthenticated
from ._ingest import Ingest

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
TRANSPORT = "grpc"


class GrpcReceiver:
    def __init__(
        self,
        ingest: Ingest,
        token: BearerToken,
        address: ListenAddress,
        max_message: int,
        tls: TLS | None = None,
    ) -> None:
        self._ingest = ingest
        self._token = token
        self._address = address
        self._max_message = max_message
        self._tls = tls
        self._server: Any = None
        self._health = health.aio.HealthServicer()
        self.port = 0

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message),
                ("grpc.max_send_message_length", 4 << 20),
                ("grpc.so_reuseport", 0),
            ],
        )
        handler = grpc.method_handlers_generic_handler(
            TRACE_SERVICE,
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
        )
        server.add_generic_rpc_handlers((handler,))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        credentials = _credentials(self._tls)
        try:
            if credentials is None:
                self.port = server.add_insecure_port(str(self._address))
            else:
                self.port = server.add_secure_port(str(self._address), credentials)
        except RuntimeError:  # grpc's "Failed to bind to address"
            self.port = 0
        if not self.port:
            raise OSError(
                f"cannot listen for OTLP/gRPC on {self._address} (address in use or not "
                "available): choose another with --grpc-listen"
            )
        await server.start()
        self._server = server
        for service in ("", TRACE_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to ``grace`` seconds."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None

    async def _export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            if not self._token.allows(_metadata(context, "authorization")):
                exc = Unauthenticated("missing or invalid bearer token in 'authorization'")
                self._ingest.count_failure(TRANSPORT, exc)
                raise exc
            refused, reason = self._ingest.export(body, TRANSPORT)
        except ReceiverError as exc:
            await _abort(context, exc)
            raise AssertionError("unreachable") from exc  # abort always raises
        return encode_response(refused, reason, as_json=False)


def _credentials(tls: TLS | None) -> grpc.ServerCredentials | None:
    """TLS, and mutual TLS when a client CA is set; None for plain text."""
    if tls is None or not tls.enabled:
        return None
    assert tls.cert_file is not None and tls.key_file is not None
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return str(v)
    return None


async def _abort(context: grpc.aio.ServicerContext, exc: ReceiverError) -> None:
    code: grpc.StatusCode = getattr(grpc.StatusCode, exc.grpc_code)
    trailers: tuple[tuple[str, bytes], ...] = ()
    if isinstance(exc, Overloaded):
        # RetryInfo tells OTLP exporters how long to wait; they retry UNAVAILABLE on their own.
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        detail = AnyProto()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status = status_pb2.Status(code=code.value[0], message=str(exc), details=[detail])
        trailers = (("grpc-status-details-bin", status.SerializeToString()),)
    await context.abort(code, str(exc), trailers)
