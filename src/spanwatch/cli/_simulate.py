"""``spanwatch simulate``: simulated traffic, with labelled faults, sent to a daemon over OTLP."""

from __future__ import annotations

import sys
import time

import grpc
from google.rpc import error_details_pb2, status_pb2

from spanwatch.model import Pattern
from spanwatch.otlp import encode_batch
from spanwatch.sim import NS, Fault, Simulator

from ._eval import TARGETS

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
FAULT_AT_S = 600.0  # after the detector's warm-up and error-signature learning

SCENARIOS = ["healthy", "demo", *(p.value for p in Pattern)]


def scenario_faults(name: str) -> tuple[Fault, ...]:
    if name == "healthy":
        return ()
    if name == "demo":  # one after another, so each shows up on its own
        steps = [
            Pattern.ERROR_BURST,
            Pattern.LATENCY_SPIKE,
            Pattern.SLOW_DEPENDENCY,
            Pattern.RETRY_STORM,
            Pattern.TRAFFIC_DROP,
        ]
        return tuple(
            Fault(p, *TARGETS[p][0][:2], FAULT_AT_S + 300 * i, 180, TARGETS[p][0][2])
            for i, p in enumerate(steps)
        )
    pattern = Pattern(name)
    service, operation, magnitude = TARGETS[pattern][0]
    duration = 600.0 if pattern is Pattern.LATENCY_DRIFT else 300.0
    return (Fault(pattern, service, operation, FAULT_AT_S, duration, magnitude),)


def simulate(
    target: str,
    speed: float,
    scenario: str,
    duration: float,
    seed: int,
    rate: float,
    token: str = "",
) -> int:
    faults = scenario_faults(scenario)
    # Event time starts in the past so that, at speed 1, the first fault begins about now.
    start_ns = time.time_ns() - int(FAULT_AT_S * NS)
    sim = Simulator(seed=seed, rate=rate, faults=faults, start_ns=start_ns)
    for label in sim.labels:
        offset = (label.start_ns - start_ns) / NS
        print(
            f"fault: {label.pattern.value} at {label.root_cause.service} "
            f"{label.root_cause.operation} from t={offset:.0f}s",
            file=sys.stderr,
        )
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    sent = 0
    began = time.monotonic()
    with grpc.insecure_channel(target, compression=grpc.Compression.Gzip) as channel:
        export = channel.unary_unary(EXPORT)
        for tick, batch in enumerate(sim.batches(duration)):
            if speed > 0:
                delay = began + tick / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            body = encode_batch(batch).SerializeToString()
            for attempt in range(20):
                try:
                    export(body, timeout=30, metadata=metadata)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 19:
                        print(
                            f"spanwatch: {target} answered {exc.code().name}: {exc.details()}",
                            file=sys.stderr,
                        )
                        return 1
                    time.sleep(_retry_delay(exc))
            sent += len(batch)
            if tick % 60 == 59:
                print(f"t={tick + 1}s sent {sent} spans", file=sys.stderr)
    print(f"done: {sent} spans, {duration:.0f}s of event time", file=sys.stderr)
    return 0


def _retry_delay(exc: grpc.RpcError) -> float:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.ToNanoseconds()) / NS
    return 0.5
