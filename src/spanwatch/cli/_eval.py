"""``spanwatch eval``: the detector against labelled simulated faults, over several seeds.

Each run simulates the shop topology, injects one fault after a warm-up, and feeds the spans to
a fresh detector in event time. An incident *matches* the fault when it opens between the
fault's start and two minutes after its end and names the fault's root cause or pattern.

- recall: runs with a matching incident
- delay: from the fault's start to the first matching incident's detection (event time)
- precision: matching incidents / all incidents opened in fault runs
- root cause / pattern: of the first matching incident (a dependency is named by itself)
- false alarms: incidents in healthy runs (a whole compressed day of load, a no-op deploy)
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from spanwatch.detect import Detector, Settings
from spanwatch.model import Pattern
from spanwatch.sim import NS, Fault, Label, Simulator

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
DURATIONS = {Pattern.LATENCY_DRIFT: 600.0}


@dataclass
class Opened:
    pattern: str
    root: tuple[str, str]
    detected_ns: int


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
    patterns: dict[Pattern, PatternScore]
    healthy_hours: float
    false_alarms: int

    def rows(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for pattern, sc in self.patterns.items():
            out.append(
                {
                    "pattern": pattern.value,
                    "runs": sc.runs,
                    "recall": sc.detected / sc.runs if sc.runs else 0.0,
                    "median_delay_s": statistics.median(sc.delays_s) if sc.delays_s else None,
                    "precision": sc.matched / sc.incidents if sc.incidents else 1.0,
                    "root_cause_accuracy": sc.root_ok / sc.detected if sc.detected else 0.0,
                    "pattern_accuracy": sc.pattern_ok / sc.detected if sc.detected else 0.0,
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
            "false_alarms_per_healthy_hour": (
                self.false_alarms / self.healthy_hours if self.healthy_hours else 0.0
            ),
        }

    def table(self) -> str:
        lines = [
            f"{'pattern':18s} {'runs':>4s} {'recall':>6s} {'delay s':>7s} {'precision':>9s} "
            f"{'root ok':>7s} {'pattern ok':>10s}",
        ]
        for row in self.rows():
            delay = row["median_delay_s"]
            lines.append(
                f"{row['pattern']:18s} {row['runs']:>4} {row['recall']:>6.2f} "
                f"{'-' if delay is None else f'{delay:.0f}':>7s} {row['precision']:>9.2f} "
                f"{row['root_cause_accuracy']:>7.2f} {row['pattern_accuracy']:>10.2f}"
            )
        t = self.totals()
        lines.append(
            f"{'all':18s} {sum(s.runs for s in self.patterns.values()):>4} {t['recall']:>6.2f} "
            f"{t['median_delay_s']:>7.0f} {t['precision']:>9.2f} {t['root_cause_accuracy']:>7.2f} "
            f"{t['pattern_accuracy']:>10.2f}"
        )
        lines.append(
            f"healthy: {self.healthy_hours:.1f} simulated hours, {self.false_alarms} "
            f"incidents, {t['false_alarms_per_healthy_hour']:.2f} per hour"
        )
        return "\n".join(lines)


def run_detector(sim: Simulator, seconds: float, settings: Settings | None = None) -> list[Opened]:
    """Incidents a fresh detector opens on the simulated traffic, as last updated."""
    detector = Detector(settings)
    incidents: dict[str, Opened] = {}
    for batch in sim.batches(seconds):
        for event in detector.process(batch):
            if event.type in ("incident.opened", "incident.updated"):
                inc = event.fields["incident"]
                root = (inc["root_cause"]["service"], inc["root_cause"]["operation"])
                incidents[inc["id"]] = Opened(inc["pattern"], root, _parse_ns(inc["detected_at"]))
    return list(incidents.values())


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
        return opened.root[0] == label.root_cause.service
    return opened.root == (label.root_cause.service, label.root_cause.operation)


def evaluate(
    seeds: Iterable[int],
    patterns: Iterable[Pattern] | None = None,
    healthy_seconds: float = 7200.0,
    rate: float = 20.0,
) -> Report:
    seeds = list(seeds)
    scores: dict[Pattern, PatternScore] = {}
    for pattern in patterns or list(Pattern):
        score = scores[pattern] = PatternScore()
        for seed in seeds:
            service, operation, magnitude = TARGETS[pattern][seed % len(TARGETS[pattern])]
            duration = DURATIONS.get(pattern, FAULT_S)
            fault = Fault(pattern, service, operation, WARMUP_S, duration, magnitude)
            sim = Simulator(seed=seed, rate=rate, faults=(fault,))
            (label,) = sim.labels
            opened = run_detector(sim, WARMUP_S + duration + 300)
            score.runs += 1
            score.incidents += len(opened)
            matching = [o for o in opened if _matches(o, label)]
            score.matched += len(matching)
            if matching:
                first = min(matching, key=lambda o: o.detected_ns)
                score.detected += 1
                score.delays_s.append((first.detected_ns - label.start_ns) / NS)
                score.root_ok += _root_ok(first, label)
                score.pattern_ok += first.pattern == label.pattern.value
    false_alarms = 0
    for seed in seeds:
        sim = Simulator(seed=1000 + seed, rate=rate, day_s=healthy_seconds)
        false_alarms += len(run_detector(sim, healthy_seconds))
    return Report(scores, len(seeds) * healthy_seconds / 3600, false_alarms)
