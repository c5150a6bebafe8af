"""An in-process OTLP LogsService gRPC server that records what it receives."""

from __future__ import annotations

import threading
import time

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


class LogsCollector(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self.lock = threading.Lock()

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: object
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        with self.lock:
            for resource_logs in request.resource_logs:
                resource = MessageToDict(resource_logs.resource)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        entry = MessageToDict(record, preserving_proto_field_name=True)
                        entry["_resource"] = resource
                        entry["_trace_id"] = record.trace_id.hex()
                        entry["_span_id"] = record.span_id.hex()
                        self.records.append(entry)
        return logs_service_pb2.ExportLogsServiceResponse()

    def wait(self, count: int, timeout: float = 15) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.records) >= count:
                    return list(self.records)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} log records, got {len(self.records)}")
