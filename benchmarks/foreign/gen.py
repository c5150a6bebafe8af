#!/usr/bin/env python3
"""Foreign traffic for scoring the detector: a trace simulator written apart from spanwatch.

This is not spanwatch's own simulator (``spanwatch.sim``): it was written from scratch, after two
public microservice benchmark systems, so that the detector is scored on trace shapes it was not
built against. It tunes nothing; ``score.py`` next to it feeds its runs to the detector and
reports what it found. Run from the repository root:

    .venv/bin/python benchmarks/foreign/gen.py stats --system trainticket --kind healthy --seed 1
    .venv/bin/python benchmarks/foreign/score.py --only boutique --kinds cpu,healthy --seeds 0

The two systems:

  boutique     after Google's Online Boutique (Go frontend, gRPC services in Go, Node, Python,
               C#, Java; redis behind the cart)
  trainticket  after FudanSELab Train-Ticket (Java Spring Boot, OTel Java agent 2.x shapes:
               HTTP client spans named by the bare method with url.full / server.address,
               server spans "METHOD /route", JDBC spans "SELECT ts.table", some INTERNAL
               controller / Spring Data spans)

Traffic: lognormal own-time per operation (per-op sigma) with rare slow outliers and GC blips,
sequential, parallel and looped calls, a compressed day (rate swings +-60% over the run),
bursty clients, low-traffic entry points, health probes, a steady share of 4xx answers that are
no fault, a few services with two replicas.

Faults (one per run, after 25 min warm-up, 8 min long): cpu, memory, net_delay, loss,
exception, wrong_return, exception_nostatus, wrong_return_nostatus; and healthy (45 min, with a
no-op deploy in the middle).

    generate(system, kind, seed, target=None) -> Run(bodies=[(t_ns, bytes)], label=dict, spans)

CLI (benchmarks/foreign/gen.py):
    gen.py stats   --system boutique --kind healthy --seed 1 [--minutes 10]
    gen.py compare --system boutique --kind net_delay --seed 0
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import defaultdict
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsvc

MS = 1_000_000
T0_NS = 1767225600 * 1_000_000_000  # 2026-01-01T00:00:00Z
WARMUP_S = 25 * 60
FAULT_S = 8 * 60
AFTER_S = 4 * 60
HEALTHY_S = 45 * 60

SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP SpanKind values
UNSET, OK, ERROR = 0, 1, 2

KINDS = (
    "cpu",
    "memory",
    "net_delay",
    "loss",
    "exception",
    "wrong_return",
    "exception_nostatus",
    "wrong_return_nostatus",
    "healthy",
)


# --------------------------------------------------------------------------------------------
# spans, services, instances


class Span:
    __slots__ = (
        "attrs",
        "end",
        "events",
        "inst",
        "kind",
        "msg",
        "name",
        "pid",
        "scope",
        "sid",
        "start",
        "status",
        "tid",
    )

    def __init__(self, tid, sid, pid, name, kind, start, inst, scope, attrs):
        self.tid, self.sid, self.pid = tid, sid, pid
        self.name, self.kind, self.start, self.end = name, kind, start, start
        self.inst, self.scope, self.attrs = inst, scope, attrs
        self.status, self.msg, self.events = UNSET, "", None


class Instance:
    __slots__ = ("alive_from", "alive_to", "iid", "pod", "resource", "svc", "version")

    def __init__(self, svc, version, iid, pod, alive_from, alive_to):
        self.svc, self.version, self.iid, self.pod = svc, version, iid, pod
        self.alive_from, self.alive_to = alive_from, alive_to
        self.resource = None


LANG_SDK = {
    "go": ("go", "1.28.0"),
    "java": ("java", "1.42.1"),
    "python": ("python", "1.27.0"),
    "node": ("nodejs", "1.26.0"),
    "dotnet": ("dotnet", "1.9.0"),
}

SCOPES = {
    ("go", "http_server"): (
        "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
        "0.53.0",
    ),
    ("go", "grpc"): (
        "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        "0.53.0",
    ),
    ("go", "internal"): ("github.com/GoogleCloudPlatform/microservices-demo", ""),
    ("node", "grpc"): ("@opentelemetry/instrumentation-grpc", "0.52.1"),
    ("python", "grpc"): ("opentelemetry.instrumentation.grpc", "0.48b0"),
    ("dotnet", "grpc_server"): ("Microsoft.AspNetCore", ""),
    ("dotnet", "redis"): ("OpenTelemetry.Instrumentation.StackExchangeRedis", "1.0.0-rc9.15"),
    ("java", "grpc"): ("io.opentelemetry.grpc-1.6", "2.8.0-alpha"),
    ("java", "http_server"): ("io.opentelemetry.tomcat-10.0", "2.8.0-alpha"),
    ("java", "http_client"): ("io.opentelemetry.http-url-connection", "2.8.0-alpha"),
    ("java", "controller"): ("io.opentelemetry.spring-webmvc-6.0", "2.8.0-alpha"),
    ("java", "repo"): ("io.opentelemetry.spring-data-1.8", "2.8.0-alpha"),
    ("java", "jdbc"): ("io.opentelemetry.jdbc", "2.8.0-alpha"),
    ("java", "gw_server"): ("io.opentelemetry.netty-4.1", "2.8.0-alpha"),
    ("java", "gw_client"): ("io.opentelemetry.netty-4.1", "2.8.0-alpha"),
}


@dataclass
class Service:
    name: str
    lang: str
    port: int
    replicas: int = 1
    version: str = "1.0.0"
    controllers: bool = False  # java: controller-telemetry on (INTERNAL controller spans)
    repos: bool = False  # java: spring-data spans
    stable_db: bool = False  # java: stable db semconv (db.query.text ...)
    gateway: bool = False
    instances: list = field(default_factory=list)

    def alive(self, t):
        return [i for i in self.instances if i.alive_from <= t < i.alive_to]


@dataclass
class Op:
    svc: str
    name: str  # the server span name
    proto: str  # http | grpc
    handler: object
    method: str = ""  # http method
    route: str = ""  # http route
    grpc_service: str = ""
    grpc_method: str = ""
    controller: str = ""  # java INTERNAL controller span name


class Fail(Exception):
    """A handler stops here. code: HTTP status; grpc: gRPC code (None: from code)."""

    def __init__(self, code, exc=None, msg="", grpc=None, stack=None, record=True, desc=None):
        super().__init__(msg)
        self.code, self.exc, self.msg, self.record = code, exc, msg, record
        self.grpc = (
            grpc
            if grpc is not None
            else {400: 3, 401: 16, 404: 5, 409: 6, 500: 13, 503: 14, 504: 4}.get(code, 2)
        )
        self.stack, self.desc = stack, desc


@dataclass
class Result:
    code: int = 200
    grpc: int = 0
    timeout: bool = False
    wrong: bool = False
    exc: str | None = None
    desc: str = ""

    @property
    def failed(self):
        return self.timeout or self.code >= 500


@dataclass
class Fault:
    kind: str
    service: str = ""
    operation: str = ""
    start: float = 0.0  # ms from run start
    end: float = 0.0
    params: dict = field(default_factory=dict)
    caller_exc: dict = field(default_factory=dict)

    def on(self, svc, t):
        return self.service == svc and self.start <= t < self.end


# --------------------------------------------------------------------------------------------
# stack traces


def java_stack(exc, msg, svc, frames):
    pkg = (
        "edu.fudan.common"
        if not svc.startswith("ts-")
        else "edu.fudan." + svc[3:].replace("-service", "").replace("-", "")
    )
    lines = [f"{exc}: {msg}" if msg else exc]
    for i, f in enumerate(frames):
        lines.append(f"\tat {pkg}.{f}({f.split('.')[0]}.java:{57 + 13 * i})")
    lines += [
        "\tat "
        "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
        "\tat "
        "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
        "\tat "
        "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1089)",
        "\tat "
        "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:174)",
        "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
    ]
    return "\n".join(lines)


def go_stack(fn):
    return (
        f"goroutine 1337 [running]:\nmain.{fn}(...)\n\t/src/main.go:212 +0x1c5\n"
        "google.golang.org/grpc.(*Server).processUnaryRPC(...)\n"
        "\t/go/pkg/mod/google.golang.org/grpc@v1.65.0/server.go:1379 +0xdf1"
    )


def py_stack(exc, msg, fn):
    return (
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.12/site-packages/grpc/_server.py", line 555, '
        "in _call_behavior\n"
        "    response_or_iterator = behavior(argument, context)\n"
        f'  File "/recommendationservice/{fn}.py", line 71, in {fn}\n'
        f"    prod_list = list(set(product_ids) - set(request.product_ids))\n{exc}: {msg}"
    )


# --------------------------------------------------------------------------------------------
# the simulator


class Sim:
    def __init__(self, system, seed, fault: Fault, duration_s, no_status=False):
        self.system = system
        self.rng = random.Random(f"{system}/{seed}/{fault.kind}/{fault.service}")
        self.fault = fault
        self.duration_ms = duration_s * 1000.0
        self.no_status = no_status
        self.services: dict[str, Service] = {}
        self.ops: dict[tuple[str, str], Op] = {}
        self.short: dict[tuple[str, str], Op] = {}
        self.spans: list[Span] = []
        self.entries = []  # (svc, opname, rate/s, burst_share, (bmin, bmax), params fn)
        self.deploys = []  # (t_ms, svc, new_version)
        self.day_phase = self.rng.uniform(0, 2 * math.pi)
        self.bg_error_ops = {}

    # ---- topology building
    def service(self, name, lang, port, **kw):
        s = Service(name, lang, port, **kw)
        self.services[name] = s
        return s

    def op(self, svc, name, proto, handler, **kw):
        o = Op(svc, name, proto, handler, **kw)
        self.ops[(svc, name)] = o
        if proto == "grpc":
            self.short[(svc, o.grpc_method)] = o
        return o

    def http(self, svc, method, route, handler, controller=""):
        return self.op(
            svc,
            f"{method} {route}",
            "http",
            handler,
            method=method,
            route=route,
            controller=controller,
        )

    def grpc(self, svc, gsvc, method, handler):
        s = self.services[svc]
        name = f"{gsvc}/{method}"
        if s.lang == "dotnet":  # ASP.NET Core names gRPC server spans "POST /pkg.Svc/Method"
            name = f"POST /{gsvc}/{method}"
        return self.op(svc, name, "grpc", handler, grpc_service=gsvc, grpc_method=method)

    def resolve(self, svc, name):
        return self.short.get((svc, name)) or self.ops[(svc, name)]

    def start_instances(self):
        rng = self.rng
        for s in self.services.values():
            for _r in range(s.replicas):
                s.instances.append(self._new_instance(s, s.version, -1e12, 1e15))
        for t, name, ver in self.deploys:  # rolling: new pods up at t, old ones gone at t+20s
            s = self.services[name]
            old = [i for i in s.instances if i.alive_to > t]
            for i in old:
                i.alive_to = t + rng.uniform(5_000, 20_000)
            for _r in range(s.replicas):
                s.instances.append(self._new_instance(s, ver, t, 1e15))

    def _new_instance(self, s, version, a, b):
        rng = self.rng
        iid = (
            f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
            f"{rng.getrandbits(16) | 0x8000:04x}-{rng.getrandbits(48):012x}"
        )
        alnum = "bcdfghjklmnpqrstvwxz2456789"
        pod = (
            f"{s.name}-{''.join(rng.choice(alnum) for _ in range(10))}-"
            f"{''.join(rng.choice(alnum) for _ in range(5))}"
        )
        inst = Instance(s.name, version, iid, pod, a, b)
        lang, sdkver = LANG_SDK[s.lang]
        attrs = [
            ("service.name", s.name),
            ("service.version", version),
            ("service.instance.id", iid),
            ("deployment.environment", "production"),
            ("telemetry.sdk.language", lang),
            ("telemetry.sdk.name", "opentelemetry"),
            ("telemetry.sdk.version", sdkver),
            ("host.name", pod),
            ("k8s.pod.name", pod),
            ("k8s.namespace.name", self.system),
        ]
        if s.lang == "java":
            attrs += [
                ("process.runtime.name", "OpenJDK Runtime Environment"),
                ("process.runtime.version", "17.0.12+7"),
                ("telemetry.distro.name", "opentelemetry-java-instrumentation"),
            ]
        inst.resource = attrs
        return inst

    # ---- ids
    def tid(self):
        return self.rng.getrandbits(128).to_bytes(16, "big")

    def sid(self):
        return (self.rng.getrandbits(64) | 1).to_bytes(8, "big")

    # ---- latency primitives
    def lognorm(self, med, sigma):
        return med * math.exp(sigma * self.rng.gauss(0.0, 1.0))

    def net(self):
        return self.lognorm(0.35, 0.45)

    def day(self, t_ms):
        return 1.0 + 0.6 * math.sin(2 * math.pi * t_ms / self.duration_ms + self.day_phase)

    # ---- serving
    def serve(self, op: Op, t, parent: Span | None, tid, params, client_ip="10.4.0.17"):
        rng = self.rng
        svc = self.services[op.svc]
        alive = svc.alive(t)
        inst = alive[0] if len(alive) == 1 else rng.choice(alive)
        f = self.fault
        if op.proto == "grpc":
            scope = SCOPES[(svc.lang, "grpc_server" if svc.lang == "dotnet" else "grpc")]
            attrs = {
                "rpc.system": "grpc",
                "rpc.service": op.grpc_service,
                "rpc.method": op.grpc_method,
                "server.address": svc.name,
                "server.port": svc.port,
                "network.peer.address": client_ip,
            }
            if svc.lang == "dotnet":
                attrs.update(
                    {
                        "http.request.method": "POST",
                        "http.route": f"/{op.grpc_service}/{op.grpc_method}",
                        "url.path": f"/{op.grpc_service}/{op.grpc_method}",
                        "url.scheme": "http",
                        "network.protocol.version": "2",
                    }
                )
        else:
            scope = SCOPES[(svc.lang, "gw_server" if svc.gateway else "http_server")]
            path = fill_path(rng, op.route, params)
            attrs = {
                "http.request.method": op.method,
                "http.route": op.route,
                "url.path": path,
                "url.scheme": "http",
                "server.address": svc.name,
                "server.port": svc.port,
                "network.protocol.version": "1.1",
                "client.address": client_ip,
                "user_agent.original": params.get("_ua", "Java/17.0.12"),
            }
        span = Span(
            tid, self.sid(), parent.sid if parent else b"", op.name, SERVER, t, inst, scope, attrs
        )
        self.spans.append(span)
        c = Ctx(self, svc, inst, tid, span, t + self.lognorm(0.05, 0.5))
        ctrl = None
        if svc.lang == "java" and svc.controllers and op.controller:
            c.t += self.lognorm(0.15, 0.4)
            ctrl = Span(
                tid,
                self.sid(),
                span.sid,
                op.controller,
                INTERNAL,
                c.t,
                inst,
                SCOPES[("java", "controller")],
                {
                    "code.namespace": "edu.fudan."
                    + svc.name[3:].replace("-service", "").replace("-", "")
                    + ".controller."
                    + op.controller.split(".")[0],
                    "code.function": op.controller.split(".")[1],
                },
            )
            self.spans.append(ctrl)
            c.parent = ctrl
        # injected behaviour decided per request
        if f.on(svc.name, t):
            if f.kind == "memory" and rng.random() < f.params["pause_p"]:
                c.pause = rng.uniform(100.0, 500.0)
            if (
                f.kind in ("exception", "exception_nostatus")
                and op.name == f.operation
                and inst.version == f.params["version"]
                and rng.random() < f.params["p"]
            ):
                c.fail_at = rng.randint(1, 2)
        if svc.lang in ("java", "dotnet", "go") and rng.random() < 0.002:
            c.pause += rng.uniform(15.0, 60.0)  # background GC blips
        res = Result()
        try:
            op.handler(c, params)
            if c.fail_at is not None:
                c.inject_fail()
            bad = self.bg_error_ops.get((svc.name, op.name))
            if bad and rng.random() < bad[0]:
                raise Fail(500, bad[1], bad[2], grpc=bad[3])
        except Fail as e:
            res.code, res.grpc, res.exc, res.desc = e.code, e.grpc, e.exc, e.desc or e.msg
            self.record_server_fail(svc, op, span, ctrl, e, c.t)
        else:
            if op.proto == "grpc":
                attrs["rpc.grpc.status_code"] = 0
        if op.proto == "http":
            attrs["http.response.status_code"] = res.code
        elif svc.lang == "dotnet":
            attrs["http.response.status_code"] = 200  # gRPC over HTTP/2 answers 200
        if ctrl is not None:
            ctrl.end = c.t
            c.t += self.lognorm(0.1, 0.4)
        span.end = c.t + self.lognorm(0.04, 0.4)
        if (
            f.kind in ("wrong_return", "wrong_return_nostatus")
            and op.name == f.operation
            and f.on(svc.name, t)
            and not res.failed
            and res.code < 400
            and rng.random() < f.params["p"]
        ):
            res.wrong = True
        res_end = span.end
        return res, res_end

    def record_server_fail(self, svc, op, span, ctrl, e: Fail, t):
        a = span.attrs
        if op.proto == "grpc":
            a["rpc.grpc.status_code"] = e.grpc
            if e.grpc in (2, 4, 12, 13, 14, 15):
                span.status, span.msg = ERROR, e.desc or e.msg
        else:
            if e.code >= 500:
                span.status = ERROR
                a["error.type"] = e.exc or str(e.code)
        if e.record and e.exc and (e.code >= 500 or e.grpc in (2, 13)):
            ev = (
                t,
                "exception",
                {
                    "exception.type": e.exc,
                    "exception.message": e.msg,
                    "exception.stacktrace": e.stack or "",
                },
            )
            if svc.lang == "go" and not e.stack:
                ev = (t, "exception", {"exception.type": e.exc, "exception.message": e.msg})
            if svc.lang == "node":
                ev = None  # instrumentation-grpc records no exception event
            if ev:
                span.events = [ev]
                if ctrl is not None:
                    ctrl.events = [ev]
        if ctrl is not None and e.code >= 500:
            ctrl.status = ERROR

    # ---- traffic
    def run(self):
        rng = self.rng
        self.start_instances()
        dur = self.duration_ms
        for svc, opname, rate, burst_share, (bmin, bmax), pfn in self.entries:
            op = self.ops[(svc, opname)]
            mean_size = (1 - burst_share) + burst_share * (bmin + bmax) / 2
            ev_rate = rate / mean_size / 1000.0  # per ms at day factor 1
            lam_max = ev_rate * 1.6
            t = 0.0
            while True:
                t += rng.expovariate(lam_max)
                if t >= dur:
                    break
                if rng.random() > self.day(t) / 1.6:
                    continue
                if burst_share and rng.random() < burst_share:
                    n = rng.randint(bmin, bmax)
                    ip = f"10.4.{rng.randint(1, 9)}.{rng.randint(2, 250)}"
                    for _k in range(n):
                        self.entry_request(op, t + rng.uniform(0, 40.0), pfn, ip)
                else:
                    self.entry_request(
                        op, t, pfn, f"10.4.{rng.randint(1, 9)}.{rng.randint(2, 250)}"
                    )
        self.probes()
        self.spans.sort(key=lambda s: s.end)
        return self.spans

    def entry_request(self, op, t, pfn, ip):
        params = pfn(self.rng) if pfn else {}
        params.setdefault("_ua", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0")
        self.serve(op, t, None, self.tid(), params, client_ip=ip)

    def probes(self):
        rng = self.rng
        for s in self.services.values():
            for inst in s.instances:
                a = max(0.0, inst.alive_from)
                b = min(self.duration_ms, inst.alive_to)
                t = a + rng.uniform(0, 5000)
                while t < b:
                    d = self.lognorm(0.12, 0.5)
                    if s.lang in ("java",) and not s.gateway:
                        name, attrs, scope = (
                            "GET /actuator/health",
                            {
                                "http.request.method": "GET",
                                "http.route": "/actuator/health",
                                "url.path": "/actuator/health",
                                "url.scheme": "http",
                                "server.address": inst.pod,
                                "server.port": s.port,
                                "user_agent.original": "kube-probe/1.30",
                                "http.response.status_code": 200,
                                "network.protocol.version": "1.1",
                            },
                            SCOPES[("java", "http_server")],
                        )
                        d = self.lognorm(1.5, 0.6)
                    elif s.gateway:
                        name, attrs, scope = (
                            "GET",
                            {
                                "http.request.method": "GET",
                                "url.path": "/index.html",
                                "url.scheme": "http",
                                "server.address": inst.pod,
                                "user_agent.original": "kube-probe/1.30",
                                "http.response.status_code": 200,
                            },
                            SCOPES[("java", "gw_server")],
                        )
                    elif s.lang == "go" and s.name == "frontend":
                        name, attrs, scope = (
                            "GET /_healthz",
                            {
                                "http.request.method": "GET",
                                "http.route": "/_healthz",
                                "url.path": "/_healthz",
                                "user_agent.original": "kube-probe/1.30",
                                "http.response.status_code": 200,
                                "server.address": inst.pod,
                            },
                            SCOPES[("go", "http_server")],
                        )
                    else:
                        name = "grpc.health.v1.Health/Check"
                        attrs = {
                            "rpc.system": "grpc",
                            "rpc.service": "grpc.health.v1.Health",
                            "rpc.method": "Check",
                            "rpc.grpc.status_code": 0,
                        }
                        scope = SCOPES[(s.lang, "grpc_server" if s.lang == "dotnet" else "grpc")]
                    sp = Span(self.tid(), self.sid(), b"", name, SERVER, t, inst, scope, attrs)
                    sp.end = t + d
                    self.spans.append(sp)
                    t += 5000.0 + rng.uniform(-30, 30)


class Ctx:
    """A handler's cursor: its service, instance, trace, current parent span and time."""

    __slots__ = ("fail_at", "inst", "parent", "pause", "rng", "sim", "steps", "svc", "t", "tid")

    def __init__(self, sim, svc, inst, tid, parent, t):
        self.sim, self.svc, self.inst, self.tid, self.parent, self.t = (
            sim,
            svc,
            inst,
            tid,
            parent,
            t,
        )
        self.steps, self.fail_at, self.pause, self.rng = 0, None, 0.0, sim.rng

    def fork(self):
        c = Ctx(self.sim, self.svc, self.inst, self.tid, self.parent, self.t)
        c.steps, c.fail_at = self.steps, None
        return c

    def step(self):
        self.steps += 1
        if self.fail_at is not None and self.steps > self.fail_at:
            self.inject_fail()

    def inject_fail(self):
        f = self.sim.fault
        self.fail_at = None
        self.t += self.sim.lognorm(0.3, 0.5)
        p = f.params
        raise Fail(
            500, p["exc"], p["msg"], grpc=p.get("grpc", 13), stack=p["stack"], desc=p.get("desc")
        )

    def work(self, med, sigma=0.5):
        self.step()
        self.own(med, sigma)

    def own(self, med, sigma=0.5):
        """Own processing time (CPU): slowed by a cpu or memory fault on this service."""
        sim = self.sim
        dt = sim.lognorm(med, sigma)
        if self.rng.random() < 0.004:
            dt *= self.rng.uniform(4.0, 15.0)  # slow outlier
        f = sim.fault
        if f.on(self.svc.name, self.t):
            if f.kind == "cpu":
                dt *= f.params["factor"] * math.exp(0.45 * self.rng.gauss(0, 1))
            elif f.kind == "memory":
                dt *= f.params["factor"]
        if self.pause:
            dt += self.pause
            self.pause = 0.0
        self.t += dt

    def parallel(self, branches):
        ends, fails = [], []
        for fn in branches:
            b = self.fork()
            b.t += self.sim.lognorm(0.03, 0.5)
            try:
                fn(b)
            except Fail as e:
                fails.append(e)
            ends.append(b.t)
        self.steps += 1
        self.t = max(ends) if ends else self.t
        if fails:
            raise fails[0]

    # ---- client calls
    def call(self, target, opname, tolerate=False, **params):
        self.step()
        sim, rng = self.sim, self.rng
        op = sim.resolve(target, opname)
        tsvc_ = sim.services[target]
        me = self.svc
        if me.lang in ("java", "dotnet", "python"):  # build / serialize the request
            self.own(0.12, 0.5)
        t0 = self.t + sim.lognorm(0.06, 0.5)
        if op.proto == "grpc":
            scope = SCOPES[(me.lang, "grpc")]
            attrs = {
                "rpc.system": "grpc",
                "rpc.service": op.grpc_service,
                "rpc.method": op.grpc_method,
                "server.address": target,
                "server.port": tsvc_.port,
            }
            name = f"{op.grpc_service}/{op.grpc_method}"
        else:
            scope = SCOPES[("java", "gw_client" if me.gateway else "http_client")]
            path = fill_path(rng, op.route, params)
            params["_path"] = path
            attrs = {
                "http.request.method": op.method,
                "url.full": f"http://{target}:{tsvc_.port}{path}",
                "server.address": target,
                "server.port": tsvc_.port,
                "network.protocol.version": "1.1",
            }
            name = op.method
        span = Span(self.tid, sim.sid(), self.parent.sid, name, CLIENT, t0, self.inst, scope, attrs)
        sim.spans.append(span)
        leg1, leg2 = sim.net(), sim.net()
        f = sim.fault
        timeout = False
        if f.on(target, t0):
            if f.kind == "net_delay":
                leg1 += f.params["delay"] * math.exp(0.2 * rng.gauss(0, 1))
            elif f.kind == "loss":
                u = rng.random()
                if u < f.params["p_timeout"]:
                    timeout = True
                elif u < f.params["p_timeout"] + f.params["p"]:
                    extra = rng.choice((200.0, 200.0, 400.0, 600.0, 1000.0)) * rng.uniform(
                        1.0, 1.15
                    )
                    if rng.random() < 0.6:
                        leg1 += extra
                    else:
                        leg2 += extra
        if timeout:
            tmo = 3000.0 if op.proto == "grpc" else 2000.0
            res = Result(code=0, grpc=4, timeout=True)
            end = t0 + tmo + sim.lognorm(0.2, 0.5)
        else:
            ip = f"10.4.{rng.randint(1, 9)}.{rng.randint(2, 250)}"
            params.setdefault("_ua", "grpc-go/1.65.0" if me.lang == "go" else "Java/17.0.12")
            res, sv_end = sim.serve(op, t0 + leg1, span, self.tid, params, client_ip=ip)
            end = sv_end + leg2
        span.end = end
        # client-side status
        if op.proto == "grpc":
            if res.timeout:
                attrs["rpc.grpc.status_code"] = 4
                span.status, span.msg = (
                    ERROR,
                    "context deadline exceeded" if me.lang == "go" else "Deadline Exceeded",
                )
            else:
                attrs["rpc.grpc.status_code"] = res.grpc
                if res.grpc != 0:
                    span.status, span.msg = ERROR, res.desc
        else:
            if res.timeout:
                span.status = ERROR
                attrs["error.type"] = "java.net.SocketTimeoutException"
                span.events = [
                    (
                        end,
                        "exception",
                        {
                            "exception.type": "java.net.SocketTimeoutException",
                            "exception.message": "Connect timed out",
                            "exception.stacktrace": (
                                "java.net.SocketTimeoutException: Connect timed out\n\tat "
                                "java.base/sun.nio.ch.NioSocketImpl"
                                ".timedFinishConnect(NioSocketImpl.java:546)"
                            ),
                        },
                    )
                ]
            else:
                attrs["http.response.status_code"] = res.code
                if res.code >= 400:
                    span.status = ERROR
                    attrs["error.type"] = str(res.code)
        self.t = end + sim.lognorm(0.03, 0.5)
        if me.lang in ("java", "dotnet", "python"):  # parse the answer (Jackson, protobuf)
            self.own(0.35 if me.lang == "java" else 0.15, 0.5)
        else:
            self.own(0.04, 0.5)
        if res.failed and not tolerate:
            self.t += sim.lognorm(0.2, 0.5)
            raise self.propagate(op, res)
        if res.wrong:
            self.t += sim.lognorm(0.15, 0.5)
            ce = f.caller_exc.get(me.name) or default_wrong_exc(me)
            raise Fail(
                500,
                ce[0],
                ce[1],
                grpc=13,
                stack=ce[2] if len(ce) > 2 else None,
                desc=ce[1],
                record=me.lang != "go" or me.name != "frontend",
            )
        return res

    def propagate(self, op, res):
        me = self.svc
        if me.lang == "java":
            if res.timeout:
                exc = "org.springframework.web.client.ResourceAccessException"
                port = self.sim.services[op.svc].port
                msg = (
                    f'I/O error on {op.method} request for "http://{op.svc}:{port}{op.route}": '
                    "Connect timed out"
                )
            else:
                exc = "org.springframework.web.client.HttpServerErrorException$InternalServerError"
                msg = "500 : [no body]"
            return Fail(500, exc, msg, stack=java_stack(exc, msg, me.name, ["service.Impl.call"]))
        if me.name == "frontend":
            return Fail(500, None, "", record=False)
        code = "DeadlineExceeded" if res.timeout else "Internal"
        desc = f"rpc error: code = {code} desc = {res.desc or 'internal error'}"
        if me.lang == "go":
            return Fail(
                500,
                "*status.Error",
                f"failed to {op.grpc_method}: {desc}",
                grpc=13,
                desc=f"failed to {op.grpc_method}: {desc}",
            )
        if me.lang == "python":
            return Fail(
                500,
                "grpc._channel._InactiveRpcError",
                desc,
                grpc=2,
                stack=py_stack("grpc._channel._InactiveRpcError", desc, "recommendation_server"),
            )
        return Fail(500, "Error", desc, grpc=2)

    def not_found(self, code=404):
        self.t += self.sim.lognorm(0.1, 0.5)
        raise Fail(code, None, "", record=False, desc="not found" if code == 404 else "rejected")

    # ---- databases
    def db(self, verb, table, stmt, med=1.0, sigma=0.5, repo=None):
        self.step()
        sim, me = self.sim, self.svc
        parent = self.parent
        rspan = None
        if repo and me.repos:
            self.t += sim.lognorm(0.05, 0.4)
            rspan = Span(
                self.tid,
                sim.sid(),
                parent.sid,
                repo,
                INTERNAL,
                self.t,
                self.inst,
                SCOPES[("java", "repo")],
                {
                    "code.namespace": "edu.fudan.repository." + repo.split(".")[0],
                    "code.function": repo.split(".")[1],
                },
            )
            sim.spans.append(rspan)
            parent = rspan
        t0 = self.t + sim.lognorm(0.08, 0.4)
        if me.stable_db:
            attrs = {
                "db.system": "mysql",
                "db.namespace": "ts",
                "db.query.text": stmt,
                "db.operation.name": verb,
                "db.collection.name": table,
                "server.address": "ts-mysql",
                "server.port": 3306,
            }
        else:
            attrs = {
                "db.system": "mysql",
                "db.name": "ts",
                "db.user": "root",
                "db.connection_string": "mysql://ts-mysql:3306",
                "db.statement": stmt,
                "db.operation": verb,
                "db.sql.table": table,
                "server.address": "ts-mysql",
                "server.port": 3306,
            }
        span = Span(
            self.tid,
            sim.sid(),
            parent.sid,
            f"{verb} ts.{table}",
            CLIENT,
            t0,
            self.inst,
            SCOPES[("java", "jdbc")],
            attrs,
        )
        sim.spans.append(span)
        span.end = t0 + sim.lognorm(med, sigma) * (8.0 if self.rng.random() < 0.003 else 1.0)
        self.t = span.end + sim.lognorm(0.05, 0.4)
        if rspan is not None:
            rspan.end = self.t
            self.t += sim.lognorm(0.02, 0.4)

    def redis(self, cmd, key, med=0.35):
        self.step()
        sim = self.sim
        t0 = self.t + sim.lognorm(0.03, 0.4)
        attrs = {
            "db.system": "redis",
            "db.statement": f"{cmd} {key}",
            "db.redis.database_index": 0,
            "db.redis.flags": "DemandMaster",
            "server.address": "redis-cart",
            "server.port": 6379,
        }
        span = Span(
            self.tid,
            sim.sid(),
            self.parent.sid,
            cmd,
            CLIENT,
            t0,
            self.inst,
            SCOPES[("dotnet", "redis")],
            attrs,
        )
        sim.spans.append(span)
        span.end = t0 + sim.lognorm(med, 0.5)
        self.t = span.end + sim.lognorm(0.03, 0.4)


def default_wrong_exc(svc):
    if svc.lang == "java":
        e, m = "java.lang.IllegalStateException", "response data is null"
        return e, m, java_stack(e, m, svc.name, ["service.Impl.check"])
    if svc.lang == "go":
        return "*errors.errorString", "invalid response from upstream"
    if svc.lang == "python":
        return "ValueError", "bad response", py_stack("ValueError", "bad response", "handler")
    return "Error", "bad response"


ID_HEX = "0123456789abcdef"
STATIONS = [
    "shanghai",
    "nanjing",
    "suzhou",
    "wuxi",
    "beijing",
    "taiyuan",
    "shijiazhuang",
    "hangzhou",
    "jiaxingnan",
    "zhenjiang",
    "xuzhou",
    "jinan",
]
TRAINS = ["G1234", "G1235", "G1236", "D1345", "Z1234", "Z1235", "T1235", "K1345"]


def fill_path(rng, route, params):
    if "{" not in route:
        return route
    out = []
    for part in route.split("/"):
        if part.startswith("{") and part.endswith("}"):
            k = part[1:-1]
            v = params.get(k)
            if v is None:
                if "Station" in k or "station" in k:
                    v = rng.choice(STATIONS)
                elif k in ("name", "trainType"):
                    v = rng.choice(TRAINS)
                elif k == "date" or k == "checkDate":
                    v = f"2026-01-{rng.randint(2, 28):02d}"
                elif k == "configName":
                    v = "DirectTicketAllocationProportion"
                else:
                    v = (
                        "".join(rng.choice(ID_HEX) for _ in range(8))
                        + "-"
                        + "".join(rng.choice(ID_HEX) for _ in range(4))
                        + "-4"
                        + "".join(rng.choice(ID_HEX) for _ in range(3))
                        + "-a"
                        + "".join(rng.choice(ID_HEX) for _ in range(3))
                        + "-"
                        + "".join(rng.choice(ID_HEX) for _ in range(12))
                    )
            out.append(v)
        else:
            out.append(part)
    return "/".join(out)


# --------------------------------------------------------------------------------------------
# system 1: boutique

PRODUCTS = [
    "OLJCESPC7Z",
    "66VCHSJNUP",
    "1YMWWN1N4O",
    "L9ECAV7KIM",
    "2ZYFJ3GM2N",
    "0PUK6V6EV0",
    "LS4PSXUNUM",
    "9SIQT8TOJO",
    "6E92ZMYYFZ",
]


def build_boutique(sim: Sim):
    S = sim.service
    S("frontend", "go", 8080, replicas=2, version="v0.10.1")
    S("productcatalogservice", "go", 3550, replicas=2, version="v0.10.1")
    S("currencyservice", "node", 7000, replicas=2, version="v0.10.1")
    S("cartservice", "dotnet", 7070, version="v0.10.1")
    S("recommendationservice", "python", 8080, version="v0.10.1")
    S("adservice", "java", 9555, version="v0.10.1")
    S("checkoutservice", "go", 5050, version="v0.10.1")
    S("shippingservice", "go", 50051, version="v0.10.1")
    S("paymentservice", "node", 50051, version="v0.10.1")
    S("emailservice", "python", 8080, version="v0.10.1")
    G = sim.grpc
    W = lambda med, sig=0.5: lambda c, p: c.work(med, sig)  # noqa: E731

    # leaves
    G("productcatalogservice", "hipstershop.ProductCatalogService", "ListProducts", W(0.35, 0.5))

    def get_product(c, p):
        c.work(0.25, 0.6)
        if p.get("missing"):
            c.not_found()
        c.work(0.05, 0.4)

    G("productcatalogservice", "hipstershop.ProductCatalogService", "GetProduct", get_product)
    G("productcatalogservice", "hipstershop.ProductCatalogService", "SearchProducts", W(0.6, 0.5))
    G("currencyservice", "hipstershop.CurrencyService", "GetSupportedCurrencies", W(0.5, 0.45))
    G("currencyservice", "hipstershop.CurrencyService", "Convert", W(0.28, 0.7))

    def get_cart(c, p):
        c.work(0.2, 0.5)
        c.redis("HGETALL", "cart:" + p.get("user", "u"), 0.4)
        c.work(0.1, 0.5)

    def add_item(c, p):
        c.work(0.2, 0.5)
        c.redis("HGET", "cart:u", 0.35)
        c.redis("HSET", "cart:u", 0.45)
        c.redis("EXPIRE", "cart:u", 0.3)

    def empty_cart(c, p):
        c.work(0.15, 0.5)
        c.redis("HSET", "cart:u", 0.45)
        c.redis("EXPIRE", "cart:u", 0.3)

    G("cartservice", "hipstershop.CartService", "GetCart", get_cart)
    G("cartservice", "hipstershop.CartService", "AddItem", add_item)
    G("cartservice", "hipstershop.CartService", "EmptyCart", empty_cart)

    def recommend(c, p):
        c.work(0.8, 0.5)
        c.call("productcatalogservice", "ListProducts")
        c.work(1.6, 0.6)

    G(
        "recommendationservice",
        "hipstershop.RecommendationService",
        "ListRecommendations",
        recommend,
    )
    G("adservice", "hipstershop.AdService", "GetAds", W(1.1, 0.8))
    G("shippingservice", "hipstershop.ShippingService", "GetQuote", W(0.4, 0.5))
    G("shippingservice", "hipstershop.ShippingService", "ShipOrder", W(0.6, 0.5))
    G("paymentservice", "hipstershop.PaymentService", "Charge", W(2.5, 0.6))
    G("emailservice", "hipstershop.EmailService", "SendOrderConfirmation", W(9.0, 0.5))

    def place_order(c, p):
        c.work(0.5, 0.5)
        c.call("cartservice", "GetCart")
        n = p.get("items", 2)
        for _i in range(n):  # prepOrderItems: one lookup and one conversion per item
            c.call("productcatalogservice", "GetProduct")
            c.call("currencyservice", "Convert")
        c.call("shippingservice", "GetQuote")
        c.call("currencyservice", "Convert")
        c.work(0.3, 0.5)
        c.call("paymentservice", "Charge")
        c.call("shippingservice", "ShipOrder")
        c.call("cartservice", "EmptyCart")
        c.call("emailservice", "SendOrderConfirmation", tolerate=True)  # logged, not fatal
        c.work(0.2, 0.5)

    G("checkoutservice", "hipstershop.CheckoutService", "PlaceOrder", place_order)

    H = sim.http

    def home(c, p):
        c.work(0.6, 0.5)
        c.call("currencyservice", "GetSupportedCurrencies")
        c.call("productcatalogservice", "ListProducts")
        c.call("cartservice", "GetCart")
        c.work(0.3, 0.5)
        c.parallel([lambda b: b.call("currencyservice", "Convert") for _ in range(9)])
        if c.rng.random() < 0.85:
            c.call("adservice", "GetAds", tolerate=True)
        c.work(2.0, 0.6)  # template rendering

    def product(c, p):
        c.work(0.4, 0.5)
        r = c.call("productcatalogservice", "GetProduct", missing=p.get("missing"))
        if r.code == 404 or r.grpc == 5:
            c.work(0.3, 0.5)
            c.not_found()
        c.call("currencyservice", "GetSupportedCurrencies")
        c.call("cartservice", "GetCart")
        c.call("currencyservice", "Convert")
        c.call("recommendationservice", "ListRecommendations", tolerate=True)
        if c.rng.random() < 0.85:
            c.call("adservice", "GetAds", tolerate=True)
        c.work(1.6, 0.6)

    def view_cart(c, p):
        c.work(0.4, 0.5)
        c.call("currencyservice", "GetSupportedCurrencies")
        c.call("cartservice", "GetCart")
        c.call("recommendationservice", "ListRecommendations", tolerate=True)
        c.call("shippingservice", "GetQuote")
        for _ in range(p.get("items", 1)):
            c.call("productcatalogservice", "GetProduct")
            c.call("currencyservice", "Convert")
        c.work(1.4, 0.6)

    def add_to_cart(c, p):
        c.work(0.3, 0.5)
        if p.get("badqty"):
            c.not_found(400)
        c.call("productcatalogservice", "GetProduct")
        c.call("cartservice", "AddItem")
        c.work(0.2, 0.5)

    def checkout(c, p):
        c.work(0.5, 0.5)
        c.call("checkoutservice", "PlaceOrder", items=p["items"])
        c.call("recommendationservice", "ListRecommendations", tolerate=True)
        c.call("currencyservice", "GetSupportedCurrencies")
        c.work(1.5, 0.6)

    def set_currency(c, p):
        c.work(0.2, 0.5)

    H("frontend", "GET", "/", home)
    H("frontend", "GET", "/product/{id}", product)
    H("frontend", "GET", "/cart", view_cart)
    H("frontend", "POST", "/cart", add_to_cart)
    H("frontend", "POST", "/cart/checkout", checkout)
    H("frontend", "POST", "/setCurrency", set_currency)

    def pp(rng):  # product page: ~2% unknown ids from stale links / crawlers
        if rng.random() < 0.02:
            return {
                "id": "".join(
                    rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(10)
                ),
                "missing": True,
            }
        return {"id": rng.choice(PRODUCTS)}

    items = lambda rng: {"items": min(rng.choice((1, 1, 2, 2, 3, 4, 6)), 8)}  # noqa: E731
    sim.entries += [
        ("frontend", "GET /", 1.2, 0.0, (1, 1), None),
        ("frontend", "GET /product/{id}", 1.4, 0.15, (5, 15), pp),
        ("frontend", "GET /cart", 0.3, 0.0, (1, 1), items),
        ("frontend", "POST /cart", 0.3, 0.0, (1, 1), lambda rng: {"badqty": rng.random() < 0.015}),
        ("frontend", "POST /cart/checkout", 0.13, 0.0, (1, 1), items),
        ("frontend", "POST /setCurrency", 0.08, 0.0, (1, 1), None),
    ]
    # a rare known transient error
    sim.bg_error_ops[("cartservice", "POST /hipstershop.CartService/GetCart")] = (
        0.0008,
        "StackExchange.Redis.RedisTimeoutException",
        "Timeout performing HGETALL (5000ms), inst: 0, qu: 0, qs: 1",
        14,
    )


# --------------------------------------------------------------------------------------------
# system 2: trainticket


def build_trainticket(sim: Sim):
    S = sim.service
    v = "1.0.0"
    S("ts-ui-dashboard", "java", 8080, replicas=2, version=v, gateway=True)
    S("ts-auth-service", "java", 12340, version=v, controllers=True, repos=True)
    S("ts-user-service", "java", 12342, version=v, repos=True)
    S("ts-verification-code-service", "java", 15678, version=v, controllers=True)
    S("ts-contacts-service", "java", 12347, version=v, controllers=True, repos=True)
    S("ts-travel-service", "java", 12346, replicas=2, version=v, controllers=True, repos=True)
    S("ts-ticketinfo-service", "java", 15681, version=v, controllers=True)
    S("ts-basic-service", "java", 15680, replicas=2, version=v, controllers=True)
    S("ts-station-service", "java", 12345, replicas=2, version=v, repos=True)
    S("ts-train-service", "java", 14567, version=v, repos=True)
    S("ts-route-service", "java", 11178, version=v, controllers=True, repos=True)
    S("ts-price-service", "java", 16579, version=v, repos=True)
    S("ts-seat-service", "java", 18898, version=v, controllers=True, stable_db=True)
    S("ts-order-service", "java", 12031, version=v, controllers=True, repos=True, stable_db=True)
    S("ts-config-service", "java", 15679, version=v, repos=True)
    S("ts-preserve-service", "java", 14568, version=v, controllers=True)
    S("ts-security-service", "java", 11188, version=v, controllers=True, repos=True)
    S("ts-food-service", "java", 18856, version=v, controllers=True, repos=True)
    H = sim.http
    A = "/api/v1/"

    # leaves with a database
    def station_by_name(c, p):
        c.work(0.5, 0.5)
        c.db(
            "SELECT",
            "station",
            "select s1_0.id,s1_0.name,s1_0.stay_time from station s1_0 where s1_0.name=?",
            0.9,
            0.5,
            repo="StationRepository.findByName",
        )
        c.work(0.2, 0.5)

    H(
        "ts-station-service",
        "GET",
        A + "stationservice/stations/id/{stationNameForId}",
        station_by_name,
    )

    def station_names(c, p):
        c.work(0.5, 0.5)
        for _ in range(p.get("n", 2)):
            c.db(
                "SELECT",
                "station",
                "select s1_0.id,s1_0.name from station s1_0 where s1_0.id=?",
                0.8,
                0.5,
                repo="StationRepository.findById",
            )
        c.work(0.2, 0.5)

    H("ts-station-service", "POST", A + "stationservice/stations/namelist", station_names)

    def station_list(c, p):
        c.work(0.6, 0.5)
        c.db(
            "SELECT",
            "station",
            "select s1_0.id,s1_0.name,s1_0.stay_time from station s1_0",
            2.5,
            0.5,
            repo="StationRepository.findAll",
        )
        c.work(1.5, 0.5)

    H("ts-station-service", "GET", A + "stationservice/stations", station_list)

    def train_by_name(c, p):
        c.work(0.5, 0.6)
        c.db(
            "SELECT",
            "train_type",
            "select t1_0.id,t1_0.average_speed,t1_0.name from train_type t1_0 where t1_0.name=?",
            0.8,
            0.5,
            repo="TrainTypeRepository.findByName",
        )
        c.work(0.2, 0.5)

    H("ts-train-service", "GET", A + "trainservice/trains/byName/{name}", train_by_name)

    def train_list(c, p):
        c.work(0.5, 0.5)
        c.db(
            "SELECT",
            "train_type",
            "select t1_0.id,t1_0.average_speed,t1_0.name from train_type t1_0",
            1.5,
            0.5,
            repo="TrainTypeRepository.findAll",
        )
        c.work(0.4, 0.5)

    H("ts-train-service", "GET", A + "trainservice/trains", train_list)

    def route_by_id(c, p):
        c.work(0.6, 0.5)
        c.db(
            "SELECT",
            "route",
            "select r1_0.id,r1_0.distances,r1_0.end_station,r1_0.start_station,r1_0.stations "
            "from route r1_0 where r1_0.id=?",
            1.1,
            0.5,
            repo="RouteRepository.findById",
        )
        c.work(0.3, 0.5)

    H(
        "ts-route-service",
        "GET",
        A + "routeservice/routes/{routeId}",
        route_by_id,
        "RouteController.queryById",
    )

    def price_by_route(c, p):
        c.work(0.4, 0.5)
        c.db(
            "SELECT",
            "price_config",
            "select p1_0.id,p1_0.basic_price_rate,p1_0.first_class_price_rate,p1_0.route_id,"
            "p1_0.train_type from price_config p1_0 where p1_0.route_id=? and p1_0.train_type=?",
            0.9,
            0.5,
            repo="PriceConfigRepository.findByRouteIdAndTrainType",
        )
        c.work(0.2, 0.5)

    H("ts-price-service", "GET", A + "priceservice/prices/{routeId}/{trainType}", price_by_route)

    def config_by_name(c, p):
        c.work(0.3, 0.5)
        c.db(
            "SELECT",
            "config",
            "select c1_0.name,c1_0.description,c1_0.value from config c1_0 where c1_0.name=?",
            0.7,
            0.5,
            repo="ConfigRepository.findByName",
        )
        c.work(0.1, 0.5)

    H("ts-config-service", "GET", A + "configservice/configs/{configName}", config_by_name)

    def order_tickets(c, p):
        c.work(0.5, 0.5)
        c.db(
            "SELECT",
            "orders",
            "select o1_0.id,o1_0.account_id,o1_0.bought_date,o1_0.coach_number,o1_0.seat_class,"
            "o1_0.seat_number,o1_0.status from orders o1_0 where o1_0.travel_date=? and "
            "o1_0.train_number=?",
            2.2,
            0.6,
            repo="OrderRepository.findByTravelDateAndTrainNumber",
        )
        c.work(0.6, 0.6)

    H(
        "ts-order-service",
        "POST",
        A + "orderservice/order/tickets",
        order_tickets,
        "OrderController.getTicketListByDateAndTripId",
    )

    def order_security(c, p):
        c.work(0.4, 0.5)
        c.db(
            "SELECT",
            "orders",
            "select o1_0.id,o1_0.bought_date,o1_0.status from orders o1_0 where o1_0.account_id=?",
            1.8,
            0.6,
            repo="OrderRepository.findByAccountId",
        )
        c.work(0.3, 0.5)

    H(
        "ts-order-service",
        "GET",
        A + "orderservice/order/security/{checkDate}/{accountId}",
        order_security,
        "OrderController.securityInfoCheck",
    )

    def order_create(c, p):
        c.work(0.6, 0.5)
        c.db(
            "SELECT",
            "orders",
            "select o1_0.id from orders o1_0 where o1_0.account_id=? and o1_0.travel_date=?",
            1.5,
            0.5,
            repo="OrderRepository.findByAccountId",
        )
        c.db(
            "INSERT",
            "orders",
            "insert into orders (account_id,bought_date,coach_number,contacts_document_number,"
            "contacts_name,price,seat_class,seat_number,status,train_number,travel_date,id) "
            "values (?,?,?,?,?,?,?,?,?,?,?,?)",
            3.0,
            0.5,
            repo="OrderRepository.save",
        )
        c.work(0.3, 0.5)

    H(
        "ts-order-service",
        "POST",
        A + "orderservice/order",
        order_create,
        "OrderController.createNewOrder",
    )

    def order_refresh(c, p):
        c.work(0.6, 0.5)
        c.db(
            "SELECT",
            "orders",
            "select o1_0.id,o1_0.account_id,o1_0.from_station,o1_0.to_station,o1_0.status from "
            "orders o1_0 where o1_0.account_id=?",
            2.0,
            0.6,
            repo="OrderRepository.findByAccountId",
        )
        c.call(
            "ts-station-service",
            "POST " + A + "stationservice/stations/namelist",
            n=c.rng.randint(1, 4),
        )
        c.work(0.5, 0.5)

    H(
        "ts-order-service",
        "POST",
        A + "orderservice/order/refresh",
        order_refresh,
        "OrderController.queryOrdersForRefresh",
    )

    def config_and_orders(c, p):  # seat: left tickets
        c.work(0.5, 0.5)
        c.call("ts-order-service", "POST " + A + "orderservice/order/tickets")
        c.call("ts-config-service", "GET " + A + "configservice/configs/{configName}")
        c.work(0.8, 0.6)

    H(
        "ts-seat-service",
        "POST",
        A + "seatservice/seats/left_tickets",
        config_and_orders,
        "SeatController.getLeftTicketOfInterval",
    )

    def seat_distribute(c, p):
        c.work(0.5, 0.5)
        c.call("ts-order-service", "POST " + A + "orderservice/order/tickets")
        c.call("ts-config-service", "GET " + A + "configservice/configs/{configName}")
        c.work(1.2, 0.6)

    H("ts-seat-service", "POST", A + "seatservice/seats", seat_distribute, "SeatController.create")

    def basic_travel(c, p):  # the heart of a trip query: 5 lookups
        c.work(0.6, 0.5)
        c.call("ts-station-service", "GET " + A + "stationservice/stations/id/{stationNameForId}")
        c.call("ts-station-service", "GET " + A + "stationservice/stations/id/{stationNameForId}")
        c.call("ts-train-service", "GET " + A + "trainservice/trains/byName/{name}")
        c.call("ts-route-service", "GET " + A + "routeservice/routes/{routeId}")
        c.call("ts-price-service", "GET " + A + "priceservice/prices/{routeId}/{trainType}")
        c.work(0.7, 0.6)

    H(
        "ts-basic-service",
        "POST",
        A + "basicservice/basic/travel",
        basic_travel,
        "BasicController.queryForTravel",
    )

    def ticketinfo(c, p):
        c.work(0.3, 0.5)
        c.call("ts-basic-service", "POST " + A + "basicservice/basic/travel")
        c.work(0.2, 0.5)

    H(
        "ts-ticketinfo-service",
        "POST",
        A + "ticketinfoservice/ticketinfo",
        ticketinfo,
        "TicketInfoController.queryForTravel",
    )

    def one_trip(c):
        c.call("ts-ticketinfo-service", "POST " + A + "ticketinfoservice/ticketinfo")
        for _ in range(1 if c.rng.random() < 0.5 else 2):  # first and second class
            c.call("ts-seat-service", "POST " + A + "seatservice/seats/left_tickets")
        c.work(0.3, 0.5)

    def trips_left(c, p):
        c.work(0.8, 0.5)
        c.db(
            "SELECT",
            "trip",
            "select t1_0.id,t1_0.end_time,t1_0.route_id,t1_0.start_time,t1_0.train_type_name "
            "from trip t1_0",
            2.0,
            0.5,
            repo="TripRepository.findAll",
        )
        n = c.rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        for _ in range(n):
            try:
                one_trip(c)
            except Fail:
                if c.rng.random() < 0.5:  # the controller either skips a failed trip or fails
                    raise
        c.work(1.0, 0.6)

    H(
        "ts-travel-service",
        "POST",
        A + "travelservice/trips/left",
        trips_left,
        "TravelController.queryInfo",
    )

    def trip_detail(c, p):
        c.work(0.5, 0.5)
        c.db(
            "SELECT",
            "trip",
            "select t1_0.id,t1_0.route_id,t1_0.train_type_name from trip t1_0 where t1_0.id=?",
            1.0,
            0.5,
            repo="TripRepository.findById",
        )
        one_trip(c)
        c.work(0.4, 0.5)

    H(
        "ts-travel-service",
        "POST",
        A + "travelservice/trip_detail",
        trip_detail,
        "TravelController.getTripAllDetailInfo",
    )

    def travel_route(c, p):
        c.work(0.4, 0.5)
        c.db(
            "SELECT",
            "trip",
            "select t1_0.id,t1_0.route_id from trip t1_0 where t1_0.id=?",
            0.9,
            0.5,
            repo="TripRepository.findById",
        )
        c.call("ts-route-service", "GET " + A + "routeservice/routes/{routeId}")
        c.work(0.2, 0.5)

    H(
        "ts-travel-service",
        "GET",
        A + "travelservice/routes/{tripId}",
        travel_route,
        "TravelController.getRouteByTripId",
    )

    def verify_gen(c, p):
        c.work(4.0, 0.4)  # renders a captcha image

    H(
        "ts-verification-code-service",
        "GET",
        A + "verifycode/generate",
        verify_gen,
        "VerifyCodeController.imageCode",
    )

    def verify_check(c, p):
        c.work(0.3, 0.5)

    H(
        "ts-verification-code-service",
        "GET",
        A + "verifycode/verify/{verifyCode}",
        verify_check,
        "VerifyCodeController.verifyCode",
    )

    def login(c, p):
        c.work(0.5, 0.5)
        c.call("ts-verification-code-service", "GET " + A + "verifycode/verify/{verifyCode}")
        c.db(
            "SELECT",
            "auth_user",
            "select u1_0.user_id,u1_0.password,u1_0.username from auth_user u1_0 where "
            "u1_0.username=?",
            1.0,
            0.5,
            repo="UserRepository.findByUsername",
        )
        c.work(6.0, 0.3)  # bcrypt
        if p.get("badpw"):
            c.not_found(401)
        c.work(0.8, 0.5)  # jwt

    H("ts-auth-service", "POST", A + "users/login", login, "UserController.getToken")

    def user_by_id(c, p):
        c.work(0.4, 0.5)
        c.db(
            "SELECT",
            "user",
            "select u1_0.user_id,u1_0.email,u1_0.user_name from user u1_0 where u1_0.user_id=?",
            0.9,
            0.5,
            repo="UserRepository.findByUserId",
        )

    H("ts-user-service", "GET", A + "userservice/users/id/{userId}", user_by_id)

    def contacts_by_account(c, p):
        c.work(0.5, 0.5)
        c.db(
            "SELECT",
            "contacts",
            "select c1_0.id,c1_0.account_id,c1_0.document_number,c1_0.name from contacts c1_0 "
            "where c1_0.account_id=?",
            1.2,
            0.5,
            repo="ContactsRepository.findByAccountId",
        )
        if p.get("none"):
            c.not_found()
        c.work(0.4, 0.5)

    H(
        "ts-contacts-service",
        "GET",
        A + "contactservice/contacts/account/{accountId}",
        contacts_by_account,
        "ContactsController.findContactsByAccountId",
    )

    def contacts_by_id(c, p):
        c.work(0.4, 0.5)
        c.db(
            "SELECT",
            "contacts",
            "select c1_0.id,c1_0.name from contacts c1_0 where c1_0.id=?",
            0.9,
            0.5,
            repo="ContactsRepository.findById",
        )

    H(
        "ts-contacts-service",
        "GET",
        A + "contactservice/contacts/{id}",
        contacts_by_id,
        "ContactsController.getContactsByContactsId",
    )

    def security_check(c, p):
        c.work(0.4, 0.5)
        c.db(
            "SELECT",
            "security_config",
            "select s1_0.id,s1_0.name,s1_0.value from security_config s1_0",
            0.8,
            0.5,
            repo="SecurityRepository.findAll",
        )
        c.call(
            "ts-order-service", "GET " + A + "orderservice/order/security/{checkDate}/{accountId}"
        )
        c.work(0.3, 0.5)

    H(
        "ts-security-service",
        "GET",
        A + "securityservice/securityConfigs/{accountId}",
        security_check,
        "SecurityController.check",
    )

    def food_order(c, p):
        c.work(0.4, 0.5)
        c.db(
            "INSERT",
            "food_order",
            "insert into food_order (food_name,food_type,order_id,price,id) values (?,?,?,?,?)",
            2.0,
            0.5,
            repo="FoodOrderRepository.save",
        )

    H(
        "ts-food-service",
        "POST",
        A + "foodservice/orders",
        food_order,
        "FoodController.createFoodOrder",
    )

    def food_list(c, p):
        c.work(0.5, 0.5)
        c.call("ts-travel-service", "GET " + A + "travelservice/routes/{tripId}")
        c.call("ts-station-service", "GET " + A + "stationservice/stations/id/{stationNameForId}")
        c.call("ts-station-service", "GET " + A + "stationservice/stations/id/{stationNameForId}")
        c.db(
            "SELECT",
            "train_food",
            "select t1_0.id,t1_0.foods,t1_0.trip_id from train_food t1_0 where t1_0.trip_id=?",
            1.0,
            0.5,
            repo="TrainFoodRepository.findByTripId",
        )
        if p.get("nofood"):
            c.not_found()
        c.work(0.6, 0.5)

    H(
        "ts-food-service",
        "GET",
        A + "foodservice/foods/{date}/{startStation}/{endStation}/{tripId}",
        food_list,
        "FoodController.getAllFood",
    )

    def preserve(c, p):
        rng = c.rng
        c.work(0.8, 0.5)
        c.call("ts-security-service", "GET " + A + "securityservice/securityConfigs/{accountId}")
        c.call("ts-contacts-service", "GET " + A + "contactservice/contacts/{id}")
        c.call("ts-travel-service", "POST " + A + "travelservice/trip_detail")
        c.call("ts-seat-service", "POST " + A + "seatservice/seats")
        c.call("ts-order-service", "POST " + A + "orderservice/order")
        if rng.random() < 0.5:
            c.call("ts-food-service", "POST " + A + "foodservice/orders")
        c.call("ts-user-service", "GET " + A + "userservice/users/id/{userId}")
        c.work(0.5, 0.5)

    H(
        "ts-preserve-service",
        "POST",
        A + "preserveservice/preserve",
        preserve,
        "PreserveController.preserve",
    )

    # the gateway: one route per backend prefix, a netty client call
    def route_to(target, opname, extra=None):
        def h(c, p):
            c.work(0.25, 0.5)
            q = dict(extra(c.rng)) if extra else {}
            r = c.call(target, opname, tolerate=True, **q)
            if r.timeout:
                raise Fail(504, None, "", record=False)
            if r.code >= 400:
                raise Fail(r.code, None, "", record=False)
            c.work(0.1, 0.5)

        return h

    gw = [
        (
            "POST",
            "/api/v1/travelservice/**",
            "ts-travel-service",
            "POST " + A + "travelservice/trips/left",
            0.7,
            0.25,
            None,
        ),
        (
            "GET",
            "/api/v1/verifycode/**",
            "ts-verification-code-service",
            "GET " + A + "verifycode/generate",
            0.22,
            0.0,
            None,
        ),
        (
            "POST",
            "/api/v1/users/**",
            "ts-auth-service",
            "POST " + A + "users/login",
            0.22,
            0.0,
            lambda rng: {"badpw": rng.random() < 0.03},
        ),
        (
            "GET",
            "/api/v1/contactservice/**",
            "ts-contacts-service",
            "GET " + A + "contactservice/contacts/account/{accountId}",
            0.12,
            0.0,
            lambda rng: {"none": rng.random() < 0.02},
        ),
        (
            "POST",
            "/api/v1/preserveservice/**",
            "ts-preserve-service",
            "POST " + A + "preserveservice/preserve",
            0.12,
            0.0,
            None,
        ),
        (
            "POST",
            "/api/v1/orderservice/**",
            "ts-order-service",
            "POST " + A + "orderservice/order/refresh",
            0.25,
            0.0,
            None,
        ),
        (
            "GET",
            "/api/v1/foodservice/**",
            "ts-food-service",
            "GET " + A + "foodservice/foods/{date}/{startStation}/{endStation}/{tripId}",
            0.12,
            0.0,
            lambda rng: {"nofood": rng.random() < 0.03},
        ),
        (
            "GET",
            "/api/v1/stationservice/**",
            "ts-station-service",
            "GET " + A + "stationservice/stations",
            0.1,
            0.0,
            None,
        ),
        (
            "GET",
            "/api/v1/trainservice/**",
            "ts-train-service",
            "GET " + A + "trainservice/trains",
            0.05,
            0.0,
            None,
        ),
    ]
    for method, route, target, opname, rate, burst, extra in gw:
        H("ts-ui-dashboard", method, route, route_to(target, opname, extra))
        sim.entries.append(("ts-ui-dashboard", f"{method} {route}", rate, burst, (5, 15), None))
    sim.bg_error_ops[("ts-order-service", "POST " + A + "orderservice/order/tickets")] = (
        0.0006,
        "org.springframework.dao.DataAccessResourceFailureException",
        "Unable to acquire JDBC Connection",
        13,
    )


BUILDERS = {"boutique": build_boutique, "trainticket": build_trainticket}

# --------------------------------------------------------------------------------------------
# fault plans: (system, kind) -> [target per seed]: (service, operation or "")
# operation for exception / wrong_return is the server span name of the failing (callee) op

TT = "/api/v1/"
TARGETS = {
    ("boutique", "cpu"): [("currencyservice", ""), ("checkoutservice", "")],
    ("boutique", "memory"): [("productcatalogservice", ""), ("recommendationservice", "")],
    ("boutique", "net_delay"): [("cartservice", ""), ("shippingservice", "")],
    ("boutique", "loss"): [("currencyservice", ""), ("paymentservice", "")],
    ("boutique", "exception"): [
        ("productcatalogservice", "hipstershop.ProductCatalogService/GetProduct"),
        ("checkoutservice", "hipstershop.CheckoutService/PlaceOrder"),
    ],
    ("boutique", "wrong_return"): [
        ("currencyservice", "hipstershop.CurrencyService/Convert"),
        ("shippingservice", "hipstershop.ShippingService/GetQuote"),
    ],
    ("boutique", "exception_nostatus"): [
        ("recommendationservice", "hipstershop.RecommendationService/ListRecommendations"),
        ("cartservice", "POST /hipstershop.CartService/GetCart"),
    ],
    ("boutique", "wrong_return_nostatus"): [
        ("productcatalogservice", "hipstershop.ProductCatalogService/GetProduct"),
        ("paymentservice", "hipstershop.PaymentService/Charge"),
    ],
    ("boutique", "healthy"): [("adservice", ""), ("cartservice", "")],
    ("trainticket", "cpu"): [("ts-station-service", ""), ("ts-basic-service", "")],
    ("trainticket", "memory"): [("ts-order-service", ""), ("ts-travel-service", "")],
    ("trainticket", "net_delay"): [("ts-price-service", ""), ("ts-seat-service", "")],
    ("trainticket", "loss"): [("ts-route-service", ""), ("ts-food-service", "")],
    ("trainticket", "exception"): [
        ("ts-train-service", "GET " + TT + "trainservice/trains/byName/{name}"),
        ("ts-preserve-service", "POST " + TT + "preserveservice/preserve"),
    ],
    ("trainticket", "wrong_return"): [
        ("ts-price-service", "GET " + TT + "priceservice/prices/{routeId}/{trainType}"),
        ("ts-config-service", "GET " + TT + "configservice/configs/{configName}"),
    ],
    ("trainticket", "exception_nostatus"): [
        ("ts-ticketinfo-service", "POST " + TT + "ticketinfoservice/ticketinfo"),
        ("ts-contacts-service", "GET " + TT + "contactservice/contacts/account/{accountId}"),
    ],
    ("trainticket", "wrong_return_nostatus"): [
        ("ts-route-service", "GET " + TT + "routeservice/routes/{routeId}"),
        ("ts-station-service", "GET " + TT + "stationservice/stations/id/{stationNameForId}"),
    ],
    ("trainticket", "healthy"): [("ts-route-service", ""), ("ts-order-service", "")],
}

# the exception each caller throws on a wrong answer (else default_wrong_exc)
WRONG_EXC = {
    "ts-basic-service": (
        "java.lang.NullPointerException",
        'Cannot invoke "edu.fudan.common.entity.PriceConfig.getBasicPriceRate()" because '
        '"priceConfig" is null',
    ),
    "ts-seat-service": ("java.lang.NumberFormatException", 'For input string: ""'),
    "ts-travel-service": (
        "java.lang.IndexOutOfBoundsException",
        "Index 0 out of bounds for length 0",
    ),
    "ts-food-service": (
        "java.lang.IndexOutOfBoundsException",
        "Index 0 out of bounds for length 0",
    ),
    "ts-order-service": ("java.lang.IllegalArgumentException", "station id must not be null"),
    "frontend": ("*errors.errorString", "could not convert currency: invalid money"),
    "checkoutservice": ("*errors.errorString", "failed to prepare order: invalid quote"),
    "recommendationservice": ("KeyError", "'id'"),
}

NEW_EXC = {
    "java": lambda svc: (
        "java.lang.NullPointerException",
        'Cannot invoke "java.util.List.size()" because "this.cache" is null',
    ),
    "go": lambda svc: ("*fs.PathError", "open /tmp/products.json: too many open files"),
    "python": lambda svc: ("AttributeError", "'NoneType' object has no attribute 'product_ids'"),
    "dotnet": lambda svc: (
        "System.NullReferenceException",
        "Object reference not set to an instance of an object.",
    ),
    "node": lambda svc: ("TypeError", "Cannot read properties of undefined (reading 'units')"),
}


@dataclass
class Run:
    system: str
    kind: str
    seed: int
    label: dict
    bodies: list  # (t_ns of the batch, bytes)
    spans: list
    services: dict
    n_spans: int = 0


def make_fault(sim, system, kind, seed, target=None):
    rng = random.Random(f"fault/{system}/{kind}/{seed}")
    if target is None:
        target = TARGETS[(system, kind)][seed % 2]
    svc, op = target
    if kind == "healthy":
        f = Fault("healthy", svc, "", 0.0, 0.0)
        return f
    start = WARMUP_S * 1000.0
    f = Fault(kind, svc, op, start, start + FAULT_S * 1000.0)
    p = f.params
    if kind == "cpu":
        p["factor"] = rng.uniform(3.0, 6.0)
    elif kind == "memory":
        p["factor"] = rng.uniform(1.2, 1.5)
        p["pause_p"] = 0.05
    elif kind == "net_delay":
        p["delay"] = rng.uniform(100.0, 300.0)
    elif kind == "loss":
        p["p"] = rng.uniform(0.10, 0.30)
        p["p_timeout"] = rng.uniform(0.01, 0.03)
    elif kind.startswith("exception"):
        p["p"] = rng.uniform(0.02, 0.05)
        lang = sim.services[svc].lang
        e, m = NEW_EXC[lang](svc)
        p["exc"], p["msg"] = e, m
        if lang == "java":
            p["stack"] = java_stack(
                e, m, svc, ["service.Impl.query", "controller.Controller.handle"]
            )
        elif lang == "go":
            p["stack"] = go_stack("(*server)." + op.split("/")[-1])
        elif lang == "python":
            p["stack"] = py_stack(e, m, "recommendation_server")
        else:
            p["stack"] = (
                f"{e}: {m}\n   at cartservice.cartstore.RedisCartStore.GetCartAsync(String userId)"
                " in /app/cartstore/RedisCartStore.cs:line 219"
            )
        p["grpc"] = 2 if lang in ("python", "node") else 13
        p["desc"] = m
    elif kind.startswith("wrong_return"):
        p["p"] = rng.uniform(0.10, 0.30)
        for caller, (e, m) in WRONG_EXC.items():
            if caller in sim.services:
                s = sim.services[caller]
                f.caller_exc[caller] = (
                    e,
                    m,
                    java_stack(e, m, caller, ["service.Impl.compute"])
                    if s.lang == "java"
                    else (py_stack(e, m, "x") if s.lang == "python" else None),
                )
    return f


def generate(system, kind, seed, target=None) -> Run:
    no_status = kind.endswith("_nostatus")
    dur = HEALTHY_S if kind == "healthy" else WARMUP_S + FAULT_S + AFTER_S
    probe = Sim(system, seed, Fault("healthy"), dur)
    BUILDERS[system](probe)
    fault = make_fault(probe, system, kind, seed, target)
    sim = Sim(system, seed, fault, dur, no_status=no_status)
    BUILDERS[system](sim)
    if kind == "healthy":  # a no-op deploy half way
        sim.deploys.append(
            (dur * 1000.0 / 2, fault.service, sim.services[fault.service].version + "-r2")
        )
    elif kind.startswith("exception"):
        newv = sim.services[fault.service].version + "-hotfix.1"
        fault.params["version"] = newv
        sim.deploys.append((fault.start, fault.service, newv))
    spans = sim.run()
    label = {
        "system": system,
        "kind": kind,
        "seed": seed,
        "service": fault.service,
        "operation": fault.operation if kind != "healthy" else "",
        "start_ns": T0_NS + int(fault.start * MS),
        "end_ns": T0_NS + int(fault.end * MS),
        "duration_s": dur,
        "params": {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in fault.params.items()
            if k in ("factor", "pause_p", "delay", "p", "p_timeout", "exc", "version")
        },
        "no_status": no_status,
    }
    if kind == "healthy":
        label["deploy"] = {"service": fault.service, "at_ns": T0_NS + int(dur * 1000 / 2 * MS)}
    bodies = encode_all(spans, no_status)
    return Run(system, kind, seed, label, bodies, spans, sim.services, len(spans))


# --------------------------------------------------------------------------------------------
# OTLP encoding


def _kv(kv, k, v):
    kv.key = k
    if isinstance(v, bool):
        kv.value.bool_value = v
    elif isinstance(v, int):
        kv.value.int_value = v
    elif isinstance(v, float):
        kv.value.double_value = v
    else:
        kv.value.string_value = v


STRIP = ("http.response.status_code", "rpc.grpc.status_code", "error.type")


def encode_all(spans, no_status=False, batch_ms=1000.0):
    bodies = []
    bucket = []
    edge = None
    for s in spans:
        b = int(s.end // batch_ms)
        if edge is None:
            edge = b
        if b != edge:
            bodies.append((T0_NS + int((edge + 1) * batch_ms * MS), encode(bucket, no_status)))
            bucket, edge = [], b
        bucket.append(s)
    if bucket:
        bodies.append((T0_NS + int((edge + 1) * batch_ms * MS), encode(bucket, no_status)))
    return bodies


def encode(spans, no_status):
    groups = defaultdict(lambda: defaultdict(list))
    for s in spans:
        groups[s.inst][s.scope].append(s)
    req = tsvc.ExportTraceServiceRequest()
    for inst, scopes in groups.items():
        rs = req.resource_spans.add()
        for k, v in inst.resource:
            _kv(rs.resource.attributes.add(), k, v)
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
        for (sname, sver), lst in scopes.items():
            ss = rs.scope_spans.add()
            ss.scope.name = sname
            if sver:
                ss.scope.version = sver
            for s in lst:
                p = ss.spans.add()
                p.trace_id = s.tid
                p.span_id = s.sid
                if s.pid:
                    p.parent_span_id = s.pid
                p.name = s.name
                p.kind = s.kind
                p.start_time_unix_nano = T0_NS + int(s.start * MS)
                p.end_time_unix_nano = T0_NS + int(s.end * MS)
                for k, v in s.attrs.items():
                    if no_status and k in STRIP:
                        continue
                    _kv(p.attributes.add(), k, v)
                if not no_status:
                    if s.status:
                        p.status.code = s.status
                        if s.msg:
                            p.status.message = s.msg
                    if s.events:
                        for t, name, attrs in s.events:
                            e = p.events.add()
                            e.time_unix_nano = T0_NS + int(t * MS)
                            e.name = name
                            for k, v in attrs.items():
                                _kv(e.attributes.add(), k, v)
    return req.SerializeToString()


# --------------------------------------------------------------------------------------------
# verification


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


KIND_NAME = {SERVER: "SERVER", CLIENT: "CLIENT", INTERNAL: "INTERNAL"}


def key_of(s):
    name = s.name
    if s.kind == CLIENT and "url.full" in s.attrs:
        name = f"{s.name} -> {s.attrs['server.address']}"
    return (s.inst.svc, KIND_NAME[s.kind], name)


def key_stats(spans, a_ms, b_ms):
    d = defaultdict(list)
    err = defaultdict(int)
    c4 = defaultdict(int)
    for s in spans:
        if a_ms <= s.start < b_ms:
            k = key_of(s)
            d[k].append(s.end - s.start)
            if s.status == ERROR:
                err[k] += 1
            code = s.attrs.get("http.response.status_code", 0)
            g = s.attrs.get("rpc.grpc.status_code", 0)
            if 400 <= code < 500 or g in (3, 5, 16):
                c4[k] += 1
    return d, err, c4


def cmd_stats(args):
    run = generate(args.system, args.kind, args.seed)
    secs = run.label["duration_s"]
    a, b = 0.0, min(secs, args.minutes * 60) * 1000.0
    d, err, c4 = key_stats(run.spans, a, b)
    print(
        f"{args.system}/{args.kind}/seed{args.seed}: {run.n_spans} spans in {secs}s "
        f"({run.n_spans / secs:.1f}/s), {len(run.bodies)} batches, "
        f"{sum(len(x) for _, x in run.bodies) / 1e6:.1f} MB"
    )
    span_s = (b - a) / 1000.0
    print(
        f"{'service':28} {'kind':8} {'name':62} {'/s':>6} {'p50':>7} {'p95':>7} {'p99':>8} "
        f"{'max':>8} {'err%':>5} {'4xx%':>5}"
    )
    for k in sorted(d, key=lambda k: -len(d[k])):
        xs = d[k]
        print(
            f"{k[0][:28]:28} {k[1]:8} {k[2][:62]:62} {len(xs) / span_s:6.2f} {pct(xs, 0.5):7.2f} "
            f"{pct(xs, 0.95):7.2f} {pct(xs, 0.99):8.2f} {max(xs):8.1f} "
            f"{100 * err[k] / len(xs):5.2f} "
            f"{100 * c4[k] / len(xs):5.2f}"
        )
    # traffic over the day
    per_min = defaultdict(int)
    for s in run.spans:
        if s.kind == SERVER and s.pid == b"":
            per_min[int(s.start // 60000)] += 1
    mins = sorted(per_min)
    print("entry requests/min over the run:", " ".join(str(per_min[m]) for m in mins))
    # depth
    depth = trace_depths(run.spans)
    print("trace depth (max span nesting) distribution:", dict(sorted(depth.items())))


def trace_depths(spans):
    by_t = defaultdict(dict)
    for s in spans:
        by_t[s.tid][s.sid] = s
    out = defaultdict(int)
    for _tid, m in by_t.items():
        best = 0
        for s in m.values():
            d, p = 1, s.pid
            while p and p in m:
                d += 1
                p = m[p].pid
            best = max(best, d)
        out[best] += 1
    return out


def cmd_compare(args):
    run = generate(args.system, args.kind, args.seed)
    lab = run.label
    fs = (lab["start_ns"] - T0_NS) / MS
    fe = (lab["end_ns"] - T0_NS) / MS
    tgt = lab["service"]
    print("label:", {k: v for k, v in lab.items() if k not in ("start_ns", "end_ns")})
    d0, e0, _ = key_stats(run.spans, fs - 8 * 60000, fs)
    d1, e1, _ = key_stats(run.spans, fs, fe)
    keys = [
        k
        for k in d0
        if k[0] == tgt
        or tgt in k[2]
        or (k[1] == "CLIENT" and any(tgt == s.attrs.get("server.address") for s in run.spans[:0]))
    ]
    # client spans into the target
    into = set()
    for s in run.spans:
        if s.kind == CLIENT and s.attrs.get("server.address") == tgt:
            into.add(key_of(s))
    keys = sorted(set(keys) | into)
    print(
        f"{'service':26} {'kind':8} {'name':58} {'n0':>6} {'n1':>6} {'p50 0':>7} {'p50 1':>7} "
        f"{'p99 0':>8} {'p99 1':>8} {'err0%':>6} {'err1%':>6}"
    )
    for k in keys:
        a, b = d0.get(k, []), d1.get(k, [])
        if not a and not b:
            continue
        print(
            f"{k[0][:26]:26} {k[1]:8} {k[2][:58]:58} {len(a):6} {len(b):6} "
            f"{pct(a, 0.5):7.2f} {pct(b, 0.5):7.2f} {pct(a, 0.99):8.1f} {pct(b, 0.99):8.1f} "
            f"{100 * e0.get(k, 0) / max(1, len(a)):6.2f} {100 * e1.get(k, 0) / max(1, len(b)):6.2f}"
        )
    # callers of the target: their server spans
    parents = set()
    idx = {s.sid: s for s in run.spans}
    for s in run.spans:
        if s.kind == CLIENT and s.attrs.get("server.address") == tgt and fs <= s.start < fe:
            p = idx.get(s.pid)
            while p is not None and p.kind != SERVER:
                p = idx.get(p.pid)
            if p is not None:
                parents.add(key_of(p))
    print("callers' server spans:")
    for k in sorted(parents):
        a, b = d0.get(k, []), d1.get(k, [])
        print(
            f"{k[0][:26]:26} {k[1]:8} {k[2][:58]:58} {len(a):6} {len(b):6} "
            f"{pct(a, 0.5):7.2f} {pct(b, 0.5):7.2f} {pct(a, 0.99):8.1f} {pct(b, 0.99):8.1f} "
            f"{100 * e0.get(k, 0) / max(1, len(a)):6.2f} {100 * e1.get(k, 0) / max(1, len(b)):6.2f}"
        )

    # spans per trace of the entry, before/during
    def spt(a_ms, b_ms):
        n = defaultdict(int)
        roots = {}
        for s in run.spans:
            n[s.tid] += 1
            if s.pid == b"" and a_ms <= s.start < b_ms:
                roots[s.tid] = s.name
        per = defaultdict(list)
        for t, name in roots.items():
            per[name].append(n[t])
        return {k: round(sum(v) / len(v), 1) for k, v in per.items()}

    print("mean spans per trace before:", spt(fs - 8 * 60000, fs))
    print("mean spans per trace during:", spt(fs, fe))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("stats", "compare"))
    ap.add_argument("--system", default="boutique")
    ap.add_argument("--kind", default="healthy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=1e9)
    args = ap.parse_args()
    {"stats": cmd_stats, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
