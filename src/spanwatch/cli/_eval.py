"""``spanwatch eval``: the detector against labelled simulated faults, over several seeds.

Each run simulates the shop topology, injects one fault after a warm-up, and feeds the spans to
a fresh detector in event time. An incident *matches* the fault when it opens between the
fault's start and two minutes after its end and names the fault's root cause or pattern.

- recall: runs with a matching incident
- delay: from the fault's start to the first matching incident's detection (event time)
- precision: matching incidents / all incidents opened in fault runs
- incidents per fault: matching incidents / faults found (one fault split into several shows here)
- root cause / pattern: of the first matching incident (a dependency is named by itself)
- false alarms: incidents in healthy runs (a whole compressed day of load, a no-op deploy)
- spans lost: spans the detector never judged (late beyond its bounds, or still held), as a
  share of those sent

Each *condition* is a real-fleet trouble applied to every run, fault and healthy alike (the
detector's defaults are the same in all of them):

- ``clean``: the simulation as it is
- ``span_a_year_ahead`` / ``span_minutes_ahead``: every five minutes one span, alone in its
  request from a source of its own (a browser, a host with a broken clock), stamped a year /
  five minutes ahead
- ``host_clock_behind``: every span of one service (the fault's, else ``checkout``) stamped
  five minutes behind, as from a host whose clock is wrong
- ``collector_lag``: the same service's spans arrive a minute late, through a slow collector
- ``replayed_twice``: the whole run fed twice into one detector (a second `make demo`, a
  replay after a restart); only the second pass is scored
- ``two_environments``: a healthy staging copy of the fleet (same service names, its own
  traffic) alongside prod, where the fault is; an incident in staging is a false one
- ``instrumented_old`` / ``instrumented_new``: every HTTP and database span in the shape the
  real OpenTelemetry Python instrumentations give it (``spanwatch.sim._shapes``), with the old
  or the new semantic conventions: client spans named by the bare method and their callee only
  in the URL (old) or in server.address / server.port (new), no peer.service, database spans
  named by the verb with the statement; server spans keep their names, so labels still match
- ``no_status_codes``: every span's status code and message, exception event and HTTP status
  code stripped, as from instrumentation that records none (an exception swallowed, or turned
  into a response without a status): a fault shows only as traces that stop short
- ``head_sampled``: every SDK samples at the head with ``TraceIdRatioBased(0.1)``, parent
  based: a tenth of the traces reach the detector, each whole or not at all, chosen by its
  trace id (``spanwatch.sim._fleet``); faults are as they were, seen through that tenth
- ``client_4xx``: healthy services answer a steady share of requests with a 4xx: 3% of lookups
  by id 404, 2% of POSTs 409; the server span keeps status UNSET with the code, the caller's
  client span is ERROR with the code and no message (as the ``requests`` instrumentation
  marks it), and the caller goes on. It is no fault: an incident over it is a false one
- ``bursty_clients``: requests come in bursts of about ten at once to one entry operation (a
  client that fires a batch), at the same mean rate (``Simulator(burst=10)``): per-window
  counts vary about ten times as much as steady arrivals'
- ``high_cardinality``: server spans of routes with ids are named by their raw path
  (``GET /api/products/8123``, ``GET /api/cart/5f3a9c…``) with no ``http.route``, as from
  instrumentation without route templates, and their callers' client spans likewise; an
  incident's root matches its label when the two names template alike
  (``spanwatch.detect.template``, ``{id}`` and ``{n}`` taken as one)
- ``low_traffic``: every entry operation but the busiest at 1.5 requests a 10-second window
  in the fault runs (the day's low, midnight; 3 at its mean, 4.5 at noon), the busiest as it
  was: on the shop, product pages and checkout and what only they call (catalog's lookup by
  id, recommend, checkout, inventory, payments, the orders queue and its consumer) see one
  or two requests a window
- ``health_checks``: every service probed every 5 s (``Simulator(health_checks_s=5)``), each
  probe a trace of its own: ``GET /healthz`` (half the services with ``http.route``, half
  answered by a middleware before routing, with only ``url.path``), or
  ``grpc.health.v1.Health/Check`` on a service that speaks only gRPC
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from spanwatch.detect import Detector, Settings, template
from spanwatch.model import Pattern, Span, SpanBatch, make_scope, make_source
from spanwatch.sim import NS, TOPOLOGIES, Fault, Label, Simulator
from spanwatch.sim._fleet import answer_4xx, head_sampled, quiet_entries, raw_paths
from spanwatch.sim._shapes import reshape_batch

WARMUP_S = 900.0
FAULT_S = 300.0
GRACE_NS = 120 * NS

# Several targets per pattern, picked by seed, across the topology's depth and protocols.
TARGETS: dict[Pattern, list[tuple[str, str, float]]] = {
    Pattern.ERROR_BURST: [
        ("payments", "POST /v1/charges", 0.4),
        ("catalog", "GET /api/products", 0.3),
        ("inventory", "/Inventory/Reserve", 0.5),
    ],
    Pattern.LATENCY_SPIKE: [
        ("inventory", "/Inventory/Reserve", 8.0),
        ("catalog", "GET /api/products/{id}", 6.0),
        ("payments", "POST /v1/charges", 10.0),
    ],
    Pattern.TRAFFIC_DROP: [
        ("frontend", "POST /checkout", 0.95),
        ("frontend", "GET /product/{id}", 0.9),
    ],
    Pattern.CASCADING_FAILURE: [
        ("inventory", "/Inventory/Reserve", 0.6),
        ("catalog", "GET /api/products", 0.6),
    ],
    Pattern.SLOW_DEPENDENCY: [
        ("orders-db", "", 8.0),
        ("session-cache", "", 20.0),
        ("inventory-db", "", 10.0),
    ],
    Pattern.NEW_ERROR: [
        ("cart", "GET /api/cart/{id}", 1.0),
        ("payments", "POST /v1/charges", 1.0),
        ("recommend", "/Recommend/List", 1.0),
    ],
    Pattern.RETRY_STORM: [
        ("inventory", "/Inventory/Reserve", 5.0),
        ("cart", "GET /api/cart/{id}", 5.0),
    ],
    Pattern.LATENCY_DRIFT: [
        ("catalog", "GET /api/products", 3.0),
        ("recommend", "/Recommend/List", 3.0),
    ],
}
# Network or ingress trouble in front of a callee: its callers' calls slow by this many ms
# each way while its own spans stay normal; the callee is the root cause.
TARGETS_NETWORK = [
    ("inventory", "/Inventory/Reserve", 60.0),
    ("payments", "POST /v1/charges", 120.0),
]

# CPU starvation of a whole service (a throttled container, a noisy neighbour): every one of
# its operations' own time this many times; the service is the root cause, by any operation.
TARGETS_CPU = [("catalog", "", 6.0), ("frontend", "", 8.0)]
# A wrong result: the target answers this share of its calls OK, at its usual speed, with a
# value its callers fail on (with an exception never seen: a new_error); the target is the
# root cause.
TARGETS_ANSWER = [("inventory", "/Inventory/Reserve", 0.4), ("payments", "POST /v1/charges", 0.4)]

# The other topologies (sim.TOPOLOGIES), each with targets of its own: none of them is what
# the detector was developed against. A pattern without targets is not run on it.
TOPOLOGY_TARGETS: dict[str, dict[str, list[tuple[str, str, float]]]] = {
    "shop": {
        **{p.value: t for p, t in TARGETS.items()},
        "network_delay": TARGETS_NETWORK,
        "cpu_starvation": TARGETS_CPU,
        "wrong_result": TARGETS_ANSWER,
    },
    "chain": {
        "error_burst": [
            ("tax", "/Tax/Compute", 0.4),
            ("ledger", "POST /entries", 0.3),
            ("search", "POST /reindex", 0.9),  # about one request a window
        ],
        "latency_spike": [
            ("pricing", "POST /price", 6.0),
            ("ledger", "POST /entries", 8.0),
            ("search", "POST /reindex", 5.0),
        ],
        "traffic_drop": [("edge", "GET /v2/quote", 0.9)],
        "cascading_failure": [("ledger", "POST /entries", 0.6), ("tax", "/Tax/Compute", 0.6)],
        "slow_dependency": [("ledger-db", "", 8.0), ("tax.example.net", "", 10.0)],
        "new_error": [("orders", "/Orders/Price", 0.03), ("ledger", "POST /entries", 0.05)],
        "retry_storm": [("tax", "/Tax/Compute", 5.0)],
        # orders' own time is a sixth of its span (the chain below it is the rest): a creep
        # to 5x its own time is 1.6x the span
        "latency_drift": [("orders", "/Orders/Price", 5.0)],
        "network_delay": [("ledger", "POST /entries", 60.0), ("tax", "/Tax/Compute", 80.0)],
        "cpu_starvation": [("edge", "", 8.0), ("pricing", "", 6.0)],
        "wrong_result": [("tax", "/Tax/Compute", 0.4), ("ledger", "POST /entries", 0.4)],
    },
    "fanout": {
        "error_burst": [("ingest", "/Ingest/Accept", 0.4), ("geo", "GET /lookup", 0.5)],
        "latency_spike": [
            ("indexer", "events-topic process", 6.0),
            ("geo", "GET /lookup", 10.0),
        ],
        "traffic_drop": [("collector-api", "POST /v1/events", 0.9)],
        "slow_dependency": [("raw-store", "", 8.0), ("geo-cache", "", 20.0)],
        "new_error": [("notifier", "events-topic process", 0.03)],
        "retry_storm": [("geo", "GET /lookup", 5.0)],
        "latency_drift": [("indexer", "events-topic process", 3.0)],
        "network_delay": [("geo", "GET /lookup", 40.0), ("ingest", "/Ingest/Accept", 50.0)],
        "cpu_starvation": [("collector-api", "", 8.0), ("enricher", "", 6.0)],
        "wrong_result": [("geo", "GET /lookup", 0.4), ("ingest", "/Ingest/Accept", 0.4)],
    },
}
FAULT_KINDS = [*(p.value for p in Pattern), "network_delay", "cpu_starvation", "wrong_result"]
# fault kinds that are a pattern somewhere else: (the pattern, Fault.where)
KIND_PATTERNS = {
    "network_delay": (Pattern.LATENCY_SPIKE, "network"),
    "cpu_starvation": (Pattern.LATENCY_SPIKE, "cpu"),
    "wrong_result": (Pattern.NEW_ERROR, "answer"),
}
DURATIONS = {Pattern.LATENCY_DRIFT: 600.0}


@dataclass
class Opened:
    pattern: str
    root: tuple[str, str]
    detected_ns: int
    environment: str = ""


PROD, STAGING = make_scope(["shop", "prod"]), make_scope(["shop", "staging"])
YEAR_NS = 365 * 86_400 * NS


@dataclass
class Run:
    """One run's traffic under a condition: the batches, in the order they arrive."""

    batches: Iterator[SpanBatch]
    passes: int = 1  # the detector sees the traffic this many times; the last is scored
    environment: str = ""  # incidents elsewhere are false


def _shift(span: Span, ns: int) -> Span:
    return replace(span, start_ns=span.start_ns + ns, end_ns=span.end_ns + ns)


def _lone_spans(sim: Simulator, seconds: float, skew_ns: int) -> Iterator[SpanBatch]:
    for tick, batch in enumerate(sim.batches(seconds)):
        if tick % 300 == 150 and len(batch):
            lone = _shift(batch.row(0), skew_ns)
            source = make_source(lone.service, lone.scope, f"browser-{tick}")
            yield SpanBatch.from_spans([replace(lone, span_id=b"\xee" * 8, source=source)])
        yield batch


def _per_service(
    batches: Iterator[SpanBatch], service: str, change: Callable[[list[Span]], list[Span]]
) -> Iterator[SpanBatch]:
    for batch in batches:
        rows = batch.rows()
        yield SpanBatch.from_spans(
            [s for s in rows if s.service != service]
            + change([s for s in rows if s.service == service])
        )


def _lagging(batches: Iterator[SpanBatch], service: str, ticks: int) -> Iterator[SpanBatch]:
    delayed: list[list[Span]] = []

    def change(spans: list[Span]) -> list[Span]:
        delayed.append(spans)
        return delayed.pop(0) if len(delayed) > ticks else []

    return _per_service(batches, service, change)


def _without_status(batch: SpanBatch) -> SpanBatch:
    """The batch as instrumentation that records no status, exception or HTTP status gives it."""
    n = len(batch)
    return replace(
        batch,
        status_code=[0] * n,
        status_message=[""] * n,
        exception_type=[""] * n,
        exception_message=[""] * n,
        http_status_code=[0] * n,
    )


def _condition(name: str, make_sim: Callable[[str], Simulator], seed: int, seconds: float) -> Run:
    """One run's traffic under the named condition; ``make_sim(scope)`` makes its simulation."""
    if name == "two_environments":
        prod, staging = make_sim(PROD), make_sim(STAGING)
        staging.faults = ()
        staging.rng.seed(5000 + seed)
        return Run(
            (
                SpanBatch.from_spans(a.rows() + b.rows())
                for a, b in zip(prod.batches(seconds), staging.batches(seconds), strict=True)
            ),
            environment="prod",
        )
    sim = make_sim("")
    label = sim.labels[0] if sim.labels else None
    target = label.root_cause.service if label else ""
    service = target if target in sim.topology.services else "checkout"
    if name == "clean":
        return Run(sim.batches(seconds))
    if name == "span_a_year_ahead":
        return Run(_lone_spans(sim, seconds, YEAR_NS))
    if name == "span_minutes_ahead":
        return Run(_lone_spans(sim, seconds, 300 * NS))
    if name == "host_clock_behind":
        shift = -300 * NS
        return Run(
            _per_service(sim.batches(seconds), service, lambda ss: [_shift(s, shift) for s in ss])
        )
    if name == "collector_lag":
        return Run(_lagging(sim.batches(seconds), service, 60))
    if name == "replayed_twice":
        return Run(sim.batches(seconds), passes=2)
    if name in ("instrumented_old", "instrumented_new"):
        mode = name.removeprefix("instrumented_")
        return Run(reshape_batch(batch, mode) for batch in sim.batches(seconds))
    if name == "no_status_codes":
        return Run(_without_status(batch) for batch in sim.batches(seconds))
    if name == "head_sampled":
        return Run(head_sampled(batch, 0.1) for batch in sim.batches(seconds))
    if name == "client_4xx":
        return Run(answer_4xx(batch) for batch in sim.batches(seconds))
    if name == "bursty_clients":
        sim.burst = 10.0
        return Run(sim.batches(seconds))
    if name == "high_cardinality":
        return Run(raw_paths(batch) for batch in sim.batches(seconds))
    if name == "low_traffic":
        # 3 a window at the day's mean is 1.5 at its low, where fault runs start (midnight),
        # and up to 4.5 at the noon of a healthy day
        sim.topology.entries, sim.rate = quiet_entries(sim.topology, sim.rate, per_window=3.0)
        return Run(sim.batches(seconds))
    if name == "health_checks":
        sim.health_checks_s = 5.0
        return Run(sim.batches(seconds))
    raise ValueError(f"unknown condition {name!r}; one of {', '.join(CONDITIONS)}")


CONDITIONS = (
    "clean",
    "span_a_year_ahead",
    "span_minutes_ahead",
    "host_clock_behind",
    "collector_lag",
    "replayed_twice",
    "two_environments",
    "instrumented_old",
    "instrumented_new",
    "no_status_codes",
    "head_sampled",
    "client_4xx",
    "bursty_clients",
    "high_cardinality",
    "low_traffic",
    "health_checks",
)


@dataclass
class PatternScore:
    runs: int = 0
    detected: int = 0
    delays_s: list[float] = field(default_factory=list)
    matched: int = 0
    incidents: int = 0
    root_ok: int = 0
    pattern_ok: int = 0


@dataclass
class Report:
    patterns: dict[str, PatternScore]  # by fault kind: a pattern, or network_delay
    healthy_hours: float
    false_alarms: int
    condition: str = "clean"
    topology: str = "shop"
    lost_spans: int = 0
    sent_spans: int = 0

    def rows(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for pattern, sc in self.patterns.items():
            out.append(
                {
                    "pattern": str(pattern),
                    "runs": sc.runs,
                    "recall": sc.detected / sc.runs if sc.runs else 0.0,
                    "median_delay_s": statistics.median(sc.delays_s) if sc.delays_s else None,
                    "precision": sc.matched / sc.incidents if sc.incidents else 1.0,
                    "root_cause_accuracy": sc.root_ok / sc.detected if sc.detected else 0.0,
                    "pattern_accuracy": sc.pattern_ok / sc.detected if sc.detected else 0.0,
                    # one fault split into many incidents shows here
                    "incidents_per_fault": sc.matched / sc.detected if sc.detected else 0.0,
                }
            )
        return out

    def totals(self) -> dict[str, float]:
        scores = list(self.patterns.values())
        runs = sum(s.runs for s in scores)
        detected = sum(s.detected for s in scores)
        incidents = sum(s.incidents for s in scores)
        delays = [d for s in scores for d in s.delays_s]
        return {
            "recall": detected / runs if runs else 0.0,
            "precision": sum(s.matched for s in scores) / incidents if incidents else 1.0,
            "median_delay_s": statistics.median(delays) if delays else float("nan"),
            "root_cause_accuracy": sum(s.root_ok for s in scores) / detected if detected else 0,
            "pattern_accuracy": sum(s.pattern_ok for s in scores) / detected if detected else 0,
            "incidents_per_fault": sum(s.matched for s in scores) / detected if detected else 0,
            "false_alarms_per_healthy_hour": (
                self.false_alarms / self.healthy_hours if self.healthy_hours else 0.0
            ),
            "spans_lost": self.lost_spans / self.sent_spans if self.sent_spans else 0.0,
        }

    def table(self) -> str:
        lines = [
            f"topology: {self.topology}, condition: {self.condition}",
            f"{'pattern':18s} {'runs':>4s} {'recall':>6s} {'delay s':>7s} {'precision':>9s} "
            f"{'root ok':>7s} {'pattern ok':>10s} {'inc/fault':>9s}",
        ]
        for row in self.rows():
            delay = row["median_delay_s"]
            lines.append(
                f"{row['pattern']:18s} {row['runs']:>4} {row['recall']:>6.2f} "
                f"{'-' if delay is None else f'{delay:.0f}':>7s} {row['precision']:>9.2f} "
                f"{row['root_cause_accuracy']:>7.2f} {row['pattern_accuracy']:>10.2f} "
                f"{row['incidents_per_fault']:>9.2f}"
            )
        t = self.totals()
        lines.append(
            f"{'all':18s} {sum(s.runs for s in self.patterns.values()):>4} {t['recall']:>6.2f} "
            f"{t['median_delay_s']:>7.0f} {t['precision']:>9.2f} {t['root_cause_accuracy']:>7.2f} "
            f"{t['pattern_accuracy']:>10.2f} {t['incidents_per_fault']:>9.2f}"
        )
        lines.append(
            f"healthy: {self.healthy_hours:.1f} simulated hours, {self.false_alarms} "
            f"incidents, {t['false_alarms_per_healthy_hour']:.2f} per hour"
        )
        lines.append(f"spans lost: {self.lost_spans} of {self.sent_spans} ({t['spans_lost']:.4%})")
        return "\n".join(lines)


def run_detector(sim: Simulator, seconds: float, settings: Settings | None = None) -> list[Opened]:
    """Incidents a fresh detector opens on the simulated traffic, as last updated."""
    return replay(Run(sim.batches(seconds)), settings)[0]


def replay(run: Run, settings: Settings | None = None) -> tuple[list[Opened], int, int]:
    """(incidents opened in the run's last pass, as last updated; spans lost; spans sent)."""
    detector = Detector(settings)
    batches = list(run.batches) if run.passes > 1 else run.batches
    incidents: dict[str, Opened] = {}
    sent = 0
    for _ in range(run.passes):
        incidents.clear()
        for batch in batches:
            sent += len(batch)
            for event in detector.process(batch):
                if event.type in ("incident.opened", "incident.updated"):
                    inc = event.fields["incident"]
                    root = (inc["root_cause"]["service"], inc["root_cause"]["operation"])
                    incidents[inc["id"]] = Opened(
                        inc["pattern"], root, _parse_ns(inc["detected_at"]), inc["environment"]
                    )
    lost = detector.late_spans + detector.clock.held_spans
    return list(incidents.values()), lost, sent


def _parse_ns(stamp: str) -> int:
    from datetime import datetime

    seconds, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(seconds + "+00:00").timestamp()
    return int(base) * NS + int(frac.ljust(9, "0"))


def _matches(opened: Opened, label: Label) -> bool:
    in_time = label.start_ns <= opened.detected_ns <= label.end_ns + GRACE_NS
    return in_time and (_root_ok(opened, label) or opened.pattern == label.pattern.value)


def _root_ok(opened: Opened, label: Label) -> bool:
    if label.pattern is Pattern.SLOW_DEPENDENCY:  # a dependency is named by itself
        name = opened.root[0]  # its host, or host:port when its spans give the port
        return label.root_cause.service in (name, name.rpartition(":")[0])
    service, operation = opened.root
    if not label.root_cause.operation:  # the whole service: any operation of it
        return service == label.root_cause.service
    return service == label.root_cause.service and _same_operation(
        operation, label.root_cause.operation
    )


_PLACEHOLDER = re.compile(r"\{\w+\}")


def _same_operation(a: str, b: str) -> bool:
    """Whether two operation names are one once templated: an incident on a key named by raw
    paths (``GET /api/cart/5f3a…`` → ``GET /api/cart/{id}``, ``/products/8123`` →
    ``/products/{n}``) names the operation its label names by route (``/products/{id}``)."""
    return a == b or _PLACEHOLDER.sub("{}", template(a)) == _PLACEHOLDER.sub("{}", template(b))


def evaluate(
    seeds: Iterable[int],
    patterns: Iterable[Pattern | str] | None = None,
    healthy_seconds: float = 7200.0,
    rate: float = 20.0,
    condition: str = "clean",
    topology: str = "shop",
) -> Report:
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; one of {', '.join(CONDITIONS)}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; one of {', '.join(TOPOLOGIES)}")
    make_topology = TOPOLOGIES[topology]
    targets = TOPOLOGY_TARGETS[topology]
    seeds = list(seeds)
    kinds = [str(p) for p in patterns] if patterns else [k for k in FAULT_KINDS if k in targets]
    scores: dict[str, PatternScore] = {}
    lost = sent = 0
    for kind in kinds:
        if kind not in targets:
            continue
        score = scores[kind] = PatternScore()
        pattern, where = KIND_PATTERNS[kind] if kind in KIND_PATTERNS else (Pattern(kind), "")
        for seed in seeds:
            service, operation, magnitude = targets[kind][seed % len(targets[kind])]
            duration = DURATIONS.get(pattern, FAULT_S)
            fault = Fault(pattern, service, operation, WARMUP_S, duration, magnitude, where)

            def make_sim(scope: str, seed: int = seed, fault: Fault = fault) -> Simulator:
                return Simulator(
                    make_topology(), seed=seed, rate=rate, faults=(fault,), scope=scope
                )

            (label,) = make_sim("").labels
            run = _condition(condition, make_sim, seed, WARMUP_S + duration + 300)
            opened, run_lost, run_sent = replay(run)
            lost, sent = lost + run_lost, sent + run_sent
            score.runs += 1
            score.incidents += len(opened)
            matching = [
                o
                for o in opened
                if _matches(o, label) and (not run.environment or o.environment == run.environment)
            ]
            score.matched += len(matching)
            if matching:
                first = min(matching, key=lambda o: o.detected_ns)
                score.detected += 1
                score.delays_s.append((first.detected_ns - label.start_ns) / NS)
                score.root_ok += _root_ok(first, label)
                score.pattern_ok += first.pattern == label.pattern.value
    false_alarms = 0
    for seed in seeds:

        def healthy(scope: str, seed: int = seed) -> Simulator:
            return Simulator(
                make_topology(), seed=1000 + seed, rate=rate, day_s=healthy_seconds, scope=scope
            )

        opened, run_lost, run_sent = replay(_condition(condition, healthy, seed, healthy_seconds))
        false_alarms += len(opened)
        lost, sent = lost + run_lost, sent + run_sent
    report = Report(scores, len(seeds) * healthy_seconds / 3600, false_alarms)
    report.condition, report.lost_spans, report.sent_spans = condition, lost, sent
    report.topology = topology
    return report
