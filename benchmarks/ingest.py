"""Ingest benchmark: spanwatchd against reference grpcio receivers, measured in the same run.

Each receiver runs in its own process and gets the same pre-serialized 8192-span
ExportTraceServiceRequest from several concurrent client processes. The figure is spans per
CPU-second of the receiver process (user + system), so the clients' own CPU does not count and a
noisy, shared machine affects every receiver alike. The references:

- ``parse``: a grpc.aio server that parses each request (upb) and answers; nothing else.
- ``fields``: the same, and it also reads 8 fields of every span.

Usage: python benchmarks/ingest.py [--clients 3] [--requests 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

import grpc
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from _common import daemon_command, free_port, write_results

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 8192
WARM_UP = 3
REQUEST_NS = 100_000_000  # event time one request covers


def build_request(spans: int = SPANS_PER_REQUEST, seed: int = 7, index: int = 0) -> bytes:
    """A request shaped like real instrumentation: several services, traces of ~8 spans,
    server and client spans with current semantic-convention attributes, a few errors.
    Request ``index`` covers the next 0.1 s of event time (about 80 000 spans a second, a
    large fleet for one daemon), so a sequence of them is traffic moving forward in time, not
    the same spans again, which a detector would drop as late; and concurrent clients, each
    taking every third request, stay well within the detector's 5 s of allowed lateness."""
    rng = random.Random(seed * 1_000_003 + index)
    services = ["frontend", "checkout", "cart", "payments", "inventory", "shipping"]
    routes = ["/api/cart/{id}", "/api/checkout", "/api/items", "/api/ship/{id}"]
    request = ExportTraceServiceRequest()
    per_service = spans // len(services)
    start = 1_700_000_000_000_000_000 + index * REQUEST_NS
    step = REQUEST_NS // (per_service + spans % len(services))
    for s, service in enumerate(services):
        rs = request.resource_spans.add()
        for key, value in (
            ("service.name", service),
            ("service.version", "1.4.2"),
            ("host.name", f"node-{s}"),
            ("telemetry.sdk.language", "python"),
        ):
            rs.resource.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.http"
        for i in range(per_service + (spans % len(services) if s == 0 else 0)):
            if i % 8 == 0:  # a new trace: its root, then 7 children
                trace = rng.getrandbits(128).to_bytes(16, "big")
                parent = b""
            span_id = rng.getrandbits(64).to_bytes(8, "big")
            t0 = start + i * step
            is_client = i % 2 == 1
            span = Span(
                trace_id=trace,
                span_id=span_id,
                parent_span_id=parent,
                name=f"GET {routes[i % len(routes)]}" if not is_client else "SELECT orders",
                kind=3 if is_client else 2,
                start_time_unix_nano=t0,
                end_time_unix_nano=t0 + int(rng.lognormvariate(16, 0.5)),
                status=Status(code=2 if rng.random() < 0.02 else 0),
            )
            if is_client:
                attrs = {
                    "db.system": "postgresql",
                    "db.operation.name": "SELECT",
                    "server.address": "orders-db",
                    "server.port": 5432,
                    "db.namespace": "shop",
                }
            else:
                attrs = {
                    "http.request.method": "GET",
                    "http.route": routes[i % len(routes)],
                    "http.response.status_code": 200,
                    "url.scheme": "https",
                    "server.address": "shop.example",
                    "network.protocol.version": "1.1",
                    "user_agent.original": "Mozilla/5.0",
                }
            for key, value in attrs.items():
                any_value = (
                    AnyValue(int_value=value)
                    if isinstance(value, int)
                    else AnyValue(string_value=value)
                )
                span.attributes.append(KeyValue(key=key, value=any_value))
            ss.spans.append(span)
            parent = span_id
    return request.SerializeToString()


# --- reference receivers -------------------------------------------------------------------


def serve_reference(mode: str, port: int) -> None:
    empty = ExportTraceServiceResponse().SerializeToString()

    def export(body: bytes, context: object) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        if mode == "fields":
            n = 0
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        # 8 fields of every span
                        _ = (
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            span.name,
                            span.kind,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            span.status.code,
                        )
                        n += 1
        return empty

    async def main() -> None:
        async def handler(body: bytes, context: object) -> bytes:
            return export(body, context)

        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": grpc.unary_unary_rpc_method_handler(handler)},
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


# --- clients -------------------------------------------------------------------------------


def client(target: str, bodies: list[bytes], results: multiprocessing.Queue) -> None:
    ok = busy = 0
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = ch.unary_unary(METHOD)
        while ok < len(bodies):
            try:
                call(bodies[ok], timeout=60)
                ok += 1
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                busy += 1
                time.sleep(0.05)
    results.put((ok, busy))


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def measure(
    proc: psutil.Process,
    target: str,
    bodies: list[bytes],
    clients: int,
    settle: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Send ``bodies`` (the first WARM_UP as a warm-up, the rest measured) from ``clients``
    processes, client c taking every clients-th request, so event time moves forward."""
    # Warm up: connections, caches, the allocator.
    q: multiprocessing.Queue = multiprocessing.Queue()
    warm = multiprocessing.Process(target=client, args=(target, bodies[:WARM_UP], q))
    warm.start()
    warm.join()
    q.get()
    if settle is not None:
        settle()
    before = proc.cpu_times()
    t0 = time.perf_counter()
    measured = bodies[WARM_UP:]
    workers = [
        multiprocessing.Process(target=client, args=(target, measured[c::clients], q))
        for c in range(clients)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if settle is not None:
        settle()  # count the CPU the daemon spends processing what it accepted
    wall = time.perf_counter() - t0
    after = proc.cpu_times()
    busy = sum(q.get()[1] for _ in workers)
    cpu = (after.user - before.user) + (after.system - before.system)
    spans = len(measured) * SPANS_PER_REQUEST
    return {
        "spans": spans,
        "cpu_s": cpu,
        "wall_s": wall,
        "spans_per_cpu_s": spans / cpu,
        "retries": busy,
    }


def daemon_settler(http_port: int) -> Callable[[], None]:
    def settle() -> None:
        # Wait until every accepted span has gone through the pipeline.
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz") as r:
                if json.loads(r.read())["queued_spans"] == 0:
                    return
            time.sleep(0.02)

    return settle


def late_spans(http_port: int) -> float:
    """Spans the daemon's detector dropped as late: they would have been skipped, not judged."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith("spanwatch_detector_late_spans "):
                return float(line.split()[1])
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30, help="per client, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-reference", choices=["parse", "fields"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_reference:
        serve_reference(args.serve_reference, args.port)
        return 0

    bodies = [build_request(index=i) for i in range(WARM_UP + args.clients * args.requests)]
    print(
        f"requests: {SPANS_PER_REQUEST} spans, {len(bodies[0])} bytes; "
        f"{args.clients} clients x {args.requests} requests x {args.rounds} rounds"
    )
    receivers: dict[str, tuple[list[str], int, int | None]] = {}
    for mode in ("parse", "fields"):
        port = free_port()
        receivers[f"reference-{mode}"] = (
            [sys.executable, __file__, "--serve-reference", mode, "--port", str(port)],
            port,
            None,
        )
    gport, hport = free_port(), free_port()
    receivers["spanwatchd"] = (
        daemon_command(gport, hport),
        gport,
        hport,
    )

    env = {**os.environ, "SPANWATCH_LOG__LEVEL": "warning"}
    figures: dict[str, list[float]] = {name: [] for name in receivers}
    for round_no in range(args.rounds):
        # Alternate the order each round so drift in machine load hits every receiver alike.
        order = list(receivers) if round_no % 2 == 0 else list(reversed(receivers))
        for name in order:
            command, port, http_port = receivers[name]
            if http_port:  # a fresh daemon each time: no snapshot of the last run's event time
                data_dir = tempfile.mkdtemp(prefix="spanwatch-bench-")
                command = [*command, "--data-dir", data_dir]
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
            try:
                wait_port(port)
                settle = daemon_settler(http_port) if http_port else None
                result = measure(
                    psutil.Process(proc.pid),
                    f"127.0.0.1:{port}",
                    bodies,
                    args.clients,
                    settle,
                )
                if http_port:
                    result["late_spans"] = late_spans(http_port)
            finally:
                proc.terminate()
                proc.wait(30)
                if http_port:
                    shutil.rmtree(data_dir, ignore_errors=True)
            figures[name].append(result["spans_per_cpu_s"])
            print(
                f"  round {round_no + 1} {name:18s} {result['spans_per_cpu_s']:>12,.0f} "
                f"spans/CPU-s  (cpu {result['cpu_s']:.2f}s, wall {result['wall_s']:.2f}s, "
                f"retries {result['retries']:.0f}"
                + (f", late spans {result['late_spans']:.0f})" if "late_spans" in result else ")")
            )

    median = {name: statistics.median(v) for name, v in figures.items()}
    print()
    print(f"{'receiver':20s} {'spans/CPU-s (median)':>22s} {'vs parse':>9s} {'vs fields':>10s}")
    for name, value in median.items():
        print(
            f"{name:20s} {value:>22,.0f} {value / median['reference-parse']:>9.2f} "
            f"{value / median['reference-fields']:>10.2f}"
        )
    write_results(
        "ingest",
        {
            "median_spans_per_cpu_s": median,
            "rounds": figures,
            "clients": args.clients,
            "requests_per_client": args.requests,
            "spans_per_request": SPANS_PER_REQUEST,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
