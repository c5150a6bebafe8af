"""A seeded trace simulator with labelled fault injection. Pure: no I/O, no wall clock.

Traces arrive as a Poisson process whose rate follows a daily curve (or, with ``burst``, in
bursts from clients that send many requests at once, at the same mean rate). Each trace walks the
topology from an entry operation: SERVER spans for operations, CLIENT spans for calls (to
services, databases, caches, remote hosts), PRODUCER/CONSUMER spans across the queue. Benign
noise is always on unless turned off: rare handled errors, latency outliers, a deploy that
changes nothing, and span names that carry raw ids (the detector must template them). With
``health_checks_s``, every service is also probed on its health endpoint, one trace a probe.
An operation that fails stops short, as a handler that raises does: it makes only the calls
before the point it failed at, so a failure shows in the trace's structure too.

Faults, each with a (service, operation) target, a start, a duration and a magnitude:

- ``error_burst``: the target fails often (a known error type); callers see failed calls but
  handle them.
- ``latency_spike``: the target's own time is multiplied by ``magnitude``; with ``where``
  "network" the calls into it are slower instead, with "cpu" every operation of the service.
- ``traffic_drop``: requests to the target entry operation fall by ``magnitude`` (0..1).
- ``cascading_failure``: the target fails and every caller above it fails too.
- ``slow_dependency``: the target dependency (a database, cache, queue or host, named in
  ``service``) is ``magnitude`` times slower; the callers' own work is unchanged.
- ``new_error``: the target starts failing with an error type never seen before. With
  ``where`` "answer" its spans stay OK and its callers fail instead, on its wrong results
  (a ValueError, never seen before either).
- ``retry_storm``: the target fails intermittently and its callers retry it up to
  ``magnitude`` times per request.
- ``latency_drift``: the target's own time creeps up linearly to ``magnitude`` times.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from spanwatch.model import Operation as OpRef
from spanwatch.model import Pattern, Span, SpanBatch, SpanKind, StatusCode, make_source

from ._topology import Call, Dependency, Entry, Operation, Topology, shop

NS = 1_000_000_000
MS = 1_000_000
# 2026-03-02 00:00:00 UTC: a Monday, midnight, so the daily curve starts at its low.
DEFAULT_START_NS = 1_772_409_600 * NS

_NOISE_ERRORS = {
    "http": ("HTTPError", "503 Service Unavailable"),
    "grpc": ("RpcError", "StatusCode.UNAVAILABLE"),
    "consumer": ("ProcessingError", "message handler failed"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    pattern: Pattern
    service: str
    operation: str
    start_s: float
    duration_s: float
    magnitude: float = 0.0
    # "network": a latency_spike in front of the target (its callers' client spans grow by
    # ``magnitude`` ms each way, its own server spans do not), as network or ingress trouble;
    # "cpu": a latency_spike of the whole service (every operation's own time times
    # ``magnitude``, its calls as they were; ``operation`` is empty), as CPU starvation (a
    # throttled container, a noisy neighbour) gives it; "answer": a new_error in the target's
    # answers, not its spans (it answers ``magnitude`` of its calls OK, at its usual speed, with
    # a wrong result, and each caller fails on reading it, at once, skipping the rest of its
    # work), as a wrong return value gives it
    where: str = ""

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.start_s + self.duration_s

    def progress(self, t: float) -> float:
        return min(1.0, max(0.0, (t - self.start_s) / self.duration_s))


@dataclass(frozen=True, slots=True)
class Label:
    """The truth about one injected fault, for evaluation."""

    pattern: Pattern
    root_cause: OpRef
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class Noise:
    error_rate: float = 0.003
    outlier_rate: float = 0.005
    deploy_at_s: float | None = 600.0
    deploy_service: str = "catalog"
    raw_ids_in_names: bool = True


@dataclass
class _Trace:
    trace_id: bytes
    spans: list[Span] = field(default_factory=list)


class Simulator:
    def __init__(
        self,
        topology: Topology | None = None,
        seed: int = 0,
        rate: float = 20.0,
        diurnal: float = 0.5,
        day_s: float = 86_400.0,
        start_ns: int = DEFAULT_START_NS,
        faults: tuple[Fault, ...] = (),
        noise: Noise | None = Noise(),
        scope: str = "",
        burst: float = 1.0,
        health_checks_s: float = 0.0,
    ) -> None:
        """``scope``: the resource identity every span carries (``make_scope``), e.g. one
        environment of a fleet; each service is one instance (``{service}-1``).

        ``burst``: above 1, requests come in bursts of ``burst`` on average (1 + Poisson), all
        to one entry operation within 50 ms, as from a client that fires a batch of requests;
        bursts arrive as a Poisson process at ``1/burst`` of the rate, so the mean rate is the
        same. ``health_checks_s``: every service is probed this often (0: never), each probe
        a trace of its own (``GET /healthz``, or gRPC's ``grpc.health.v1.Health/Check`` on a
        service that speaks only gRPC), drawn from a generator of its own so that the rest of
        the traffic is what it would have been without them."""
        self.topology = topology or shop()
        self.scope = scope
        self._sources: dict[str, str] = {}
        self.rng = random.Random(seed)
        self.rate = rate
        self.diurnal = diurnal
        self.day_s = day_s
        self.start_ns = start_ns
        self.faults = faults
        self.noise = noise or Noise(0.0, 0.0, None, raw_ids_in_names=False)
        self.burst = burst
        self.health_checks_s = health_checks_s
        self._probe_rng = random.Random(f"probes-{seed}")
        self._t = 0.0

    @property
    def labels(self) -> list[Label]:
        return [
            Label(
                f.pattern,
                _root_cause(f, self.topology),
                self.start_ns + int(f.start_s * NS),
                self.start_ns + int((f.start_s + f.duration_s) * NS),
            )
            for f in self.faults
        ]

    def rate_at(self, t: float) -> float:
        """Traces per second at ``t`` seconds: lowest at midnight, highest at noon."""
        phase = 2 * math.pi * t / self.day_s
        return self.rate * (1 - self.diurnal * math.cos(phase))

    def batches(self, duration_s: float, tick_s: float = 1.0) -> Iterator[SpanBatch]:
        """One batch per ``tick_s`` of event time, spans of traces that started in it."""
        end = self._t + duration_s
        while self._t < end - 1e-9:
            t = self._t
            traces = self._arrivals(t, tick_s)
            self._t = t + tick_s
            spans = [s for tr in traces if tr for s in tr.spans]
            if self.health_checks_s > 0:
                spans += self._probes(t, tick_s)
            yield SpanBatch.from_spans(spans)

    def _arrivals(self, t: float, tick_s: float) -> list[_Trace | None]:
        if self.burst <= 1:
            return [
                self._trace(t + self.rng.random() * tick_s)
                for _ in range(self._poisson(self.rate_at(t) * tick_s))
            ]
        spread = min(0.05, tick_s / 2)
        traces: list[_Trace | None] = []
        for _ in range(self._poisson(self.rate_at(t) * tick_s / self.burst)):
            at = t + self.rng.random() * (tick_s - spread)
            entry = self._pick_entry()
            for _ in range(1 + self._poisson(self.burst - 1)):
                traces.append(self._trace(at + self.rng.random() * spread, entry))
        return traces

    def _poisson(self, lam: float) -> int:
        if lam > 30:
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        threshold, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= threshold:
                return k
            k += 1

    def _pick_entry(self) -> Entry | None:
        entries = self.topology.entries
        pick = self.rng.random() * sum(e.weight for e in entries)
        for e in entries:
            pick -= e.weight
            if pick <= 0:
                return e
        return None

    def _entry(self, t: float, entry: Entry | None = None) -> Operation | None:
        e = entry or self._pick_entry()
        if e is None:
            return None
        for f in self.faults:  # a drop takes requests away; the others stay as they were
            if (
                f.pattern is Pattern.TRAFFIC_DROP
                and f.active(t)
                and (f.service, f.operation) == (e.service, e.operation)
                and self.rng.random() < f.magnitude
            ):
                return None
        return self.topology.op(e.service, e.operation)

    def _trace(self, t: float, entry: Entry | None = None) -> _Trace | None:
        op = self._entry(t, entry)
        if op is None:
            return None
        trace = _Trace(self.rng.getrandbits(128).to_bytes(16, "big"))
        start = self.start_ns + int(t * NS)
        self._server(trace, op, b"", start, t)
        return trace

    def _probes(self, t: float, tick_s: float) -> list[Span]:
        """Health checks due in [t, t + tick_s): each service on its own phase of the period."""
        every, rng = self.health_checks_s, self._probe_rng
        out = []
        for i, service in enumerate(self.topology.services):
            phase = every * ((i * 0.618) % 1)  # spread the services over the period
            k = math.ceil((t - phase) / every - 1e-9)
            while (at := phase + k * every) < t + tick_s:
                k += 1
                trace = _Trace(rng.getrandbits(128).to_bytes(16, "big"))
                start = self.start_ns + int(at * NS)
                end = start + max(50_000, int(0.3 * MS * math.exp(rng.gauss(0, 0.3))))
                span_id = rng.getrandbits(64).to_bytes(8, "big") or b"\x02" * 8
                ops = [o for o in self.topology.operations.values() if o.service == service]
                if all(o.protocol == "grpc" for o in ops):
                    attrs: dict[str, object] = {
                        "rpc_system": "grpc",
                        "rpc_service": "grpc.health.v1.Health",
                        "rpc_method": "Check",
                    }
                    name = "grpc.health.v1.Health/Check"
                else:
                    # half the services answer from a middleware before routing: no http.route
                    route = "/healthz" if i % 2 == 0 else ""
                    attrs = {
                        "http_method": "GET",
                        "http_route": route,
                        "url_path": "/healthz",
                        "http_status_code": 200,
                    }
                    name = "GET /healthz"
                out.append(
                    self._span(
                        trace,
                        span_id,
                        b"",
                        service,
                        name,
                        SpanKind.SERVER,
                        start,
                        end,
                        at,
                        None,
                        **attrs,
                    )
                )
        return out

    # -- spans -------------------------------------------------------------------------------

    def _new_id(self) -> bytes:
        return self.rng.getrandbits(64).to_bytes(8, "big") or b"\x01" * 8

    def _version(self, service: str, t: float) -> str:
        n = self.noise
        if n.deploy_at_s is not None and service == n.deploy_service and t >= n.deploy_at_s:
            return "1.4.3"
        return "1.4.2"

    def _faults_on(self, service: str, operation: str, t: float) -> list[Fault]:
        return [
            f
            for f in self.faults
            if f.active(t)
            and f.service == service
            and (f.operation == operation or f.where == "cpu")
        ]

    def _self_time(self, median_ms: float, faults: list[Fault], t: float) -> int:
        ms = median_ms * math.exp(self.rng.gauss(0, 0.35))
        if self.rng.random() < self.noise.outlier_rate:
            ms *= 4
        for f in faults:
            if f.pattern is Pattern.LATENCY_SPIKE and f.where != "network":
                ms *= f.magnitude
            elif f.pattern is Pattern.LATENCY_DRIFT:
                ms *= 1 + (f.magnitude - 1) * f.progress(t)
        return max(1000, int(ms * MS))

    def _server(
        self, trace: _Trace, op: Operation, parent: bytes, start: int, t: float
    ) -> tuple[int, bool]:
        """Emit the operation's SERVER (or CONSUMER) span and its calls; (end, failed).

        Whether it fails is decided before its calls, as an exception raised in a handler
        aborts the rest of it: a failing operation makes only the calls before the point it
        fails at (uniform over its calls), and one whose failed call cascades stops there."""
        span_id = self._new_id()
        faults = self._faults_on(op.service, op.name, t)
        self_ns = self._self_time(op.latency_ms, faults, t)
        error: tuple[str, str] | None = None
        for f in faults:
            p = self.rng.random()
            if f.where == "answer":  # its answers are wrong, its own spans are not
                continue
            if f.pattern is Pattern.ERROR_BURST and p < min(0.9, f.magnitude):
                error = _NOISE_ERRORS[op.protocol]
            elif f.pattern is Pattern.CASCADING_FAILURE and p < min(0.95, f.magnitude):
                error = ("DependencyFailure", f"{op.service} cannot serve {op.name}")
            elif f.pattern is Pattern.NEW_ERROR and p < min(0.3, f.magnitude):
                error = ("StaleReadError", "read a row version older than the cache")
            elif f.pattern is Pattern.RETRY_STORM and p < 0.5:
                error = _NOISE_ERRORS[op.protocol]
        if error is None and self.rng.random() < self.noise.error_rate:
            error = _NOISE_ERRORS[op.protocol]
        calls = op.calls
        if error is not None and calls:  # it fails before the k-th call, k uniform
            calls = calls[: self.rng.randrange(len(calls))]
        cursor = start + self_ns // 2
        rest = self_ns - self_ns // 2  # its own time after its calls
        for call in calls:
            if call.probability < 1 and self.rng.random() >= call.probability:
                continue
            cursor, failed = self._call(trace, op, call, span_id, cursor, t)
            if failed and error is None and self._cascading_above(op, t):
                # the failure below spreads: this operation fails too, and goes no further
                error = ("DependencyFailure", f"{op.service} cannot serve {op.name}")
                break
            if not failed and error is None and self._wrong_answer(call, t):
                # it fails on reading the answer, at once
                error = ("ValueError", f"unexpected answer from {call.service}")
                rest = min(rest, 100_000)
                break
        end = cursor + rest

        name = self._span_name(op)
        kind = SpanKind.CONSUMER if op.protocol == "consumer" else SpanKind.SERVER
        http = op.protocol == "http"
        method, _, path = op.name.partition(" ")
        trace.spans.append(
            self._span(
                trace,
                span_id,
                parent,
                op.service,
                name,
                kind,
                start,
                end,
                t,
                error,
                http_route=op.route or path if http else "",
                http_method=method if http else "",
                http_status_code=(503 if error else 200) if http else 0,
                rpc_system="grpc" if op.protocol == "grpc" else "",
                rpc_service=op.name.strip("/").split("/")[0] if op.protocol == "grpc" else "",
                rpc_method=op.name.strip("/").split("/")[-1] if op.protocol == "grpc" else "",
                messaging_system="kafka" if op.protocol == "consumer" else "",
            )
        )
        return end, error is not None

    def _wrong_answer(self, call: Call, t: float) -> bool:
        """Whether this call's answer, OK as it looked, is wrong (a fault of the callee's)."""
        if call.dependency is not None:
            return False
        return any(
            f.where == "answer" and self.rng.random() < f.magnitude
            for f in self._faults_on(call.service, call.operation, t)
        )

    def _cascading_above(self, op: Operation, t: float) -> bool:
        """Whether a cascading failure is active below this operation."""
        return any(
            f.pattern is Pattern.CASCADING_FAILURE
            and f.active(t)
            and self._reaches(op, f.service, f.operation)
            for f in self.faults
        )

    def _reaches(self, op: Operation, service: str, operation: str) -> bool:
        for call in op.calls:
            if call.dependency is None:
                if (call.service, call.operation) == (service, operation):
                    return True
                if self._reaches(
                    self.topology.op(call.service, call.operation), service, operation
                ):
                    return True
        return False

    def _span_name(self, op: Operation) -> str:
        if self.noise.raw_ids_in_names and "{id}" in op.name:
            if op.service == "cart":
                a, b, c, d, e = (self.rng.getrandbits(n) for n in (32, 16, 12, 12, 48))
                raw = f"{a:08x}-{b:04x}-4{c:03x}-a{d:03x}-{e:012x}"
            else:
                raw = str(self.rng.randrange(1, 100_000))
            return op.name.replace("{id}", raw)
        return op.name

    def _call(
        self, trace: _Trace, caller: Operation, call: Call, parent: bytes, start: int, t: float
    ) -> tuple[int, bool]:
        if call.dependency is not None:
            return self._dependency(trace, caller, call.dependency, parent, start, t)
        callee = self.topology.op(call.service, call.operation)
        attempts = 1
        network = 300_000  # each way
        for f in self._faults_on(callee.service, callee.name, t):
            if f.pattern is Pattern.RETRY_STORM:
                attempts = int(f.magnitude)
            elif f.pattern is Pattern.LATENCY_SPIKE and f.where == "network":
                network = int(f.magnitude * MS * math.exp(self.rng.gauss(0, 0.2)))
        cursor, failed = start, False
        for _ in range(attempts):
            span_id = self._new_id()
            server_end, failed = self._server(trace, callee, span_id, cursor + network, t)
            end = server_end + network
            trace.spans.append(
                self._span(
                    trace,
                    span_id,
                    parent,
                    caller.service,
                    callee.name,
                    SpanKind.CLIENT,
                    cursor,
                    end,
                    t,
                    _NOISE_ERRORS[callee.protocol] if failed else None,
                    peer_service=callee.service,
                    server_address=callee.service,
                    rpc_system="grpc" if callee.protocol == "grpc" else "",
                    http_method=callee.name.partition(" ")[0] if callee.protocol == "http" else "",
                )
            )
            cursor = end
            if not failed:
                break
        return cursor, failed

    def _dependency(
        self,
        trace: _Trace,
        caller: Operation,
        dep: Dependency,
        parent: bytes,
        start: int,
        t: float,
    ) -> tuple[int, bool]:
        ms = dep.latency_ms * math.exp(self.rng.gauss(0, 0.3))
        for f in self.faults:
            if f.pattern is Pattern.SLOW_DEPENDENCY and f.active(t) and f.service == dep.name:
                ms *= f.magnitude
        end = start + max(100_000, int(ms * MS))
        span_id = self._new_id()
        if dep.kind == "queue":
            trace.spans.append(
                self._span(
                    trace,
                    span_id,
                    parent,
                    caller.service,
                    f"{dep.name} publish",
                    SpanKind.PRODUCER,
                    start,
                    end,
                    t,
                    None,
                    messaging_system=dep.system,
                    server_address=dep.name,
                    peer_service=dep.name,
                )
            )
            for consumer in self.topology.operations.values():
                if consumer.protocol == "consumer" and consumer.name == f"{dep.name} process":
                    self._server(trace, consumer, span_id, end + 5 * MS, t)
            return end, False
        name = f"{dep.operation} {dep.name}" if dep.kind == "db" else dep.operation
        trace.spans.append(
            self._span(
                trace,
                span_id,
                parent,
                caller.service,
                name,
                SpanKind.CLIENT,
                start,
                end,
                t,
                None,
                db_system=dep.system if dep.kind in ("db", "cache") else "",
                db_operation=dep.operation if dep.kind in ("db", "cache") else "",
                server_address=dep.name,
                peer_service=dep.name,
                http_method=dep.operation if dep.kind == "http" else "",
            )
        )
        return end, False

    def _span(
        self,
        trace: _Trace,
        span_id: bytes,
        parent: bytes,
        service: str,
        name: str,
        kind: SpanKind,
        start: int,
        end: int,
        t: float,
        error: tuple[str, str] | None,
        **attrs: object,
    ) -> Span:
        values: dict[str, object] = {
            "http_route": "",
            "http_method": "",
            "http_status_code": 0,
            "rpc_system": "",
            "rpc_service": "",
            "rpc_method": "",
            "db_system": "",
            "db_operation": "",
            "messaging_system": "",
            "server_address": "",
            "peer_service": "",
        }
        values.update(attrs)
        return Span(
            trace_id=trace.trace_id,
            span_id=span_id,
            parent_span_id=parent,
            service=service,
            service_version=self._version(service, t),
            name=name,
            kind=int(kind),
            start_ns=start,
            end_ns=end,
            status_code=int(StatusCode.ERROR if error else StatusCode.UNSET),
            status_message=error[1] if error else "",
            exception_type=error[0] if error else "",
            exception_message=error[1] if error else "",
            scope=self.scope,
            source=self._source(service),
            **values,  # type: ignore[arg-type]
        )

    def _source(self, service: str) -> str:
        source = self._sources.get(service)
        if source is None:
            source = self._sources[service] = make_source(service, self.scope, f"{service}-1")
        return source


def _root_cause(fault: Fault, topology: Topology) -> OpRef:
    if fault.pattern is Pattern.SLOW_DEPENDENCY:
        for op in topology.operations.values():
            for call in op.calls:
                if call.dependency is not None and call.dependency.name == fault.service:
                    return OpRef(fault.service, call.dependency.operation)
    return OpRef(fault.service, fault.operation)
