"""The trace simulator: deterministic, valid traces, and each fault visible where injected."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict

import pytest

from spanwatch.model import Operation, Pattern, Span, SpanKind, StatusCode
from spanwatch.sim import Fault, Noise, Simulator


def spans(sim: Simulator, seconds: float) -> list[Span]:
    return [s for b in sim.batches(seconds) for s in b.rows()]


def template(name: str) -> str:
    return re.sub(r"/[0-9a-f-]{8,}|/\d+", "/{id}", name)


def test_same_seed_same_traces_other_seed_other_traces() -> None:
    """A seed fixes every span; another seed gives other traffic."""
    a = spans(Simulator(seed=3), 30)
    b = spans(Simulator(seed=3), 30)
    c = spans(Simulator(seed=4), 30)
    assert a == b
    assert a != c


def test_traces_are_well_formed() -> None:
    """Unique ids, parents inside the trace, children inside their parents' time."""
    rows = spans(Simulator(seed=1, rate=10), 30)
    by_trace: dict[bytes, dict[bytes, Span]] = defaultdict(dict)
    for s in rows:
        assert len(s.trace_id) == 16 and len(s.span_id) == 8 and s.end_ns >= s.start_ns
        assert s.span_id not in by_trace[s.trace_id]
        by_trace[s.trace_id][s.span_id] = s
    for trace in by_trace.values():
        roots = [s for s in trace.values() if not s.parent_span_id]
        assert len(roots) == 1 and roots[0].kind == SpanKind.SERVER
        for s in trace.values():
            if s.parent_span_id:
                parent = trace[s.parent_span_id]
                if s.kind != SpanKind.CONSUMER:  # a consumer runs after its producer
                    assert parent.start_ns <= s.start_ns and s.end_ns <= parent.end_ns
    kinds = Counter(s.kind for s in rows)
    assert {SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER} <= set(kinds)
    assert any(s.db_system == "postgresql" for s in rows)
    assert any(s.http_route for s in rows) and any(s.rpc_system == "grpc" for s in rows)


def test_load_follows_the_day() -> None:
    """Traffic at noon is about three times traffic at midnight (diurnal=0.5)."""
    sim = Simulator(seed=1, rate=10, day_s=600)
    per_tick = [len(b) for b in sim.batches(600)]
    assert statistics.mean(per_tick[280:320]) > 2 * statistics.mean(per_tick[:20])


def test_noise_is_benign_and_can_be_turned_off() -> None:
    """By default: rare errors, raw ids in names, a no-op deploy; noise=None: none of them."""
    noisy = spans(Simulator(seed=2, rate=20), 700)
    errors = sum(s.status_code == StatusCode.ERROR for s in noisy) / len(noisy)
    assert 0 < errors < 0.01
    assert len({s.name for s in noisy if s.service == "cart"}) > 100
    assert {s.service_version for s in noisy if s.service == "catalog"} == {"1.4.2", "1.4.3"}
    clean = spans(Simulator(seed=2, rate=20, noise=None), 60)
    assert not any(s.status_code == StatusCode.ERROR for s in clean)
    assert len({template(s.name) for s in clean}) == len({s.name for s in clean})


def _measure(rows: list[Span], service: str, name: str, kind: int = SpanKind.SERVER) -> dict:
    hits = [s for s in rows if s.service == service and template(s.name) == name and s.kind == kind]
    return {
        "count": len(hits),
        "errors": sum(s.status_code == StatusCode.ERROR for s in hits) / max(1, len(hits)),
        "p50_ms": statistics.median(s.duration_ns for s in hits) / 1e6 if hits else 0,
        "new_types": {s.exception_type for s in hits} - {"", "HTTPError", "RpcError"},
    }


@pytest.mark.parametrize(
    ("fault", "where", "check"),
    [
        (
            Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", 60, 60, 0.5),
            ("payments", "POST /v1/charges"),
            lambda b, d: d["errors"] > 0.3 > b["errors"] + 0.2,
        ),
        (
            Fault(Pattern.LATENCY_SPIKE, "inventory", "/Inventory/Reserve", 60, 60, 8),
            ("inventory", "/Inventory/Reserve"),
            lambda b, d: d["p50_ms"] > 3 * b["p50_ms"],
        ),
        (
            Fault(Pattern.TRAFFIC_DROP, "frontend", "POST /checkout", 60, 60, 0.95),
            ("frontend", "POST /checkout"),
            lambda b, d: d["count"] < 0.2 * b["count"],
        ),
        (
            Fault(Pattern.CASCADING_FAILURE, "inventory", "/Inventory/Reserve", 60, 60, 0.6),
            ("frontend", "POST /checkout"),
            lambda b, d: d["errors"] > 0.3,
        ),
        (
            Fault(Pattern.SLOW_DEPENDENCY, "orders-db", "", 60, 60, 10),
            ("catalog", "GET /api/products"),
            lambda b, d: d["p50_ms"] > 3 * b["p50_ms"],
        ),
        (
            Fault(Pattern.NEW_ERROR, "cart", "GET /api/cart/{id}", 60, 60, 1),
            ("cart", "GET /api/cart/{id}"),
            lambda b, d: d["new_types"] == {"StaleReadError"},
        ),
        (
            Fault(Pattern.LATENCY_DRIFT, "catalog", "GET /api/products", 60, 60, 3),
            ("catalog", "GET /api/products"),
            lambda b, d: d["p50_ms"] > 1.3 * b["p50_ms"],
        ),
    ],
    ids=lambda v: v.pattern.value if isinstance(v, Fault) else "",
)
def test_each_fault_shows_where_it_is_injected(fault: Fault, where: tuple, check: object) -> None:
    """Before the fault the target is healthy; during it, the fault's signature is there."""
    sim = Simulator(seed=5, rate=20, faults=(fault,))
    batches = list(sim.batches(120))
    before = _measure([s for b in batches[:60] for s in b.rows()], *where)
    during = _measure([s for b in batches[60:] for s in b.rows()], *where)
    assert check(before, during), (before, during)  # type: ignore[operator]
    (label,) = sim.labels
    assert label.pattern is fault.pattern and label.end_ns - label.start_ns == 60 * 10**9


def test_retry_storm_repeats_the_call_within_traces() -> None:
    """Callers retry the failing target: many CLIENT spans to it in one trace."""
    fault = Fault(Pattern.RETRY_STORM, "inventory", "/Inventory/Reserve", 30, 60, 6)
    sim = Simulator(seed=6, rate=20, faults=(fault,))
    rows = [s for b in list(sim.batches(90))[30:] for s in b.rows()]
    per_trace = Counter(
        s.trace_id for s in rows if s.kind == SpanKind.CLIENT and s.name == "/Inventory/Reserve"
    )
    assert max(per_trace.values()) >= 4
    assert sim.labels[0].root_cause.service == "inventory"


def test_slow_dependency_label_names_the_dependency() -> None:
    """A slow database is the root cause, named as the dependency and its operation."""
    sim = Simulator(
        faults=(Fault(Pattern.SLOW_DEPENDENCY, "orders-db", "", 0, 10, 5),), noise=Noise()
    )
    assert sim.labels[0].root_cause.service == "orders-db"
    assert sim.labels[0].root_cause.operation in {"SELECT", "INSERT"}


def test_cpu_starvation_slows_every_operation_of_the_service_in_its_own_time() -> None:
    """Both of catalog's operations slower, their database calls as they were; the label names
    the service alone."""
    fault = Fault(Pattern.LATENCY_SPIKE, "catalog", "", 60, 60, 6, where="cpu")
    sim = Simulator(seed=5, rate=20, faults=(fault,))
    batches = list(sim.batches(120))
    for operation in ("GET /api/products", "GET /api/products/{id}"):
        before = _measure([s for b in batches[:60] for s in b.rows()], "catalog", operation)
        during = _measure([s for b in batches[60:] for s in b.rows()], "catalog", operation)
        assert during["p50_ms"] > 2 * before["p50_ms"], (operation, before, during)
    calls = [
        [s.duration_ns for b in part for s in b.rows() if s.name.startswith("SELECT orders-db")]
        for part in (batches[:60], batches[60:])
    ]
    assert statistics.median(calls[1]) < 1.5 * statistics.median(calls[0])
    assert sim.labels[0].root_cause == Operation("catalog", "")


def test_a_wrong_result_fails_the_caller_not_the_callee() -> None:
    """Inventory's spans stay OK and as fast; checkout fails with a ValueError as the answer
    arrives, and makes none of its later calls."""
    fault = Fault(Pattern.NEW_ERROR, "inventory", "/Inventory/Reserve", 60, 60, 0.5, "answer")
    sim = Simulator(seed=5, rate=20, faults=(fault,))
    rows = [s for b in list(sim.batches(120))[60:] for s in b.rows()]
    inventory = _measure(rows, "inventory", "/Inventory/Reserve")
    checkout = _measure(rows, "checkout", "/Checkout/PlaceOrder")
    assert inventory["errors"] < 0.05 and checkout["errors"] > 0.3
    assert checkout["new_types"] == {"ValueError"}
    failed = {s.span_id for s in rows if s.exception_type == "ValueError"}
    called = {s.name for s in rows if s.parent_span_id in failed and s.kind == SpanKind.CLIENT}
    assert "POST /v1/charges" not in called and "/Inventory/Reserve" in called
    assert sim.labels[0].root_cause == Operation("inventory", "/Inventory/Reserve")
