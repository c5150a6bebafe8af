"""What the Collector's ``loadbalancing`` exporter does with ``routing_key: service``, in small.

Each ResourceSpans of an incoming OTLP request goes to one backend, chosen by the resource's
``service.name`` on a consistent-hash ring, so every span of a service reaches the same daemon
and each daemon learns its own services' baselines. (The Collector's ring hashes differently;
what matters here is the contract: one service, one backend, all of its spans.)
"""

from __future__ import annotations

import bisect
import zlib
from concurrent import futures
from types import TracebackType

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

POINTS_PER_BACKEND = 100


def service_of(resource_spans: object) -> str:
    for kv in resource_spans.resource.attributes:  # type: ignore[attr-defined]
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""


class ServiceRouter(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver on a free port that re-exports each service to its owner."""

    def __init__(self, backends: list[str]) -> None:
        ring = sorted(
            (zlib.crc32(f"{backend}#{i}".encode()), backend)
            for backend in backends
            for i in range(POINTS_PER_BACKEND)
        )
        self._points = [point for point, _ in ring]
        self._backends = [backend for _, backend in ring]
        self._channels = {b: grpc.insecure_channel(b) for b in backends}
        self._stubs = {
            b: trace_service_pb2_grpc.TraceServiceStub(c) for b, c in self._channels.items()
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def owner(self, service: str) -> str:
        i = bisect.bisect(self._points, zlib.crc32(service.encode())) % len(self._points)
        return self._backends[i]

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        split: dict[str, trace_service_pb2.ExportTraceServiceRequest] = {}
        for resource_spans in request.resource_spans:
            backend = self.owner(service_of(resource_spans))
            split.setdefault(backend, trace_service_pb2.ExportTraceServiceRequest())
            split[backend].resource_spans.append(resource_spans)
        for backend, part in split.items():
            try:
                self._stubs[backend].Export(part, timeout=30)
            except grpc.RpcError as exc:  # the collector's exporter would retry: so may the sender
                context.abort(exc.code(), f"{backend}: {exc.details()}")
        return trace_service_pb2.ExportTraceServiceResponse()

    def __enter__(self) -> ServiceRouter:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(0)
        for channel in self._channels.values():
            channel.close()
