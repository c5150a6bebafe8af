"""spanwatch eval's fleet conditions: each one runs, and a root named by raw path still matches."""

from __future__ import annotations

import pytest

from spanwatch.cli._eval import CONDITIONS, Opened, _condition, _root_ok, evaluate
from spanwatch.model import Operation, Pattern, Span, SpanKind
from spanwatch.sim import Fault, Label, Simulator

FLEET = (
    "head_sampled",
    "client_4xx",
    "bursty_clients",
    "high_cardinality",
    "low_traffic",
    "health_checks",
)


def _label(service: str, operation: str) -> Label:
    return Label(Pattern.NEW_ERROR, Operation(service, operation), 0, 10)


def test_a_root_named_by_raw_path_matches_its_route() -> None:
    """``GET /api/cart/<uuid>`` templated (``{id}``) and ``/products/8123`` (``{n}``) are the
    operations their labels name by route; another operation of the service is not."""
    cart = _label("cart", "GET /api/cart/{id}")
    assert _root_ok(Opened("new_error", ("cart", "GET /api/cart/{id}"), 5), cart)
    products = _label("catalog", "GET /api/products/{id}")
    assert _root_ok(Opened("new_error", ("catalog", "GET /api/products/{n}"), 5), products)
    assert not _root_ok(Opened("new_error", ("catalog", "GET /api/products"), 5), products)
    assert not _root_ok(Opened("new_error", ("cart", "GET /api/products/{n}"), 5), products)


def _spans(condition: str) -> list[Span]:
    fault = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", 30, 30, 0.4)

    def make_sim(scope: str) -> Simulator:
        return Simulator(seed=0, rate=10, faults=(fault,), scope=scope)

    run = _condition(condition, make_sim, 0, 60)
    return [s for b in run.batches for s in b.rows()]


def test_conditions_change_the_traffic_they_name() -> None:
    """Against clean: a tenth of the spans sampled, 4xx answers, raw paths, probes, fewer
    checkouts; bursts keep the volume."""
    clean = _spans("clean")
    assert 0.05 < len(_spans("head_sampled")) / len(clean) < 0.15
    assert any(400 <= s.http_status_code < 500 for s in _spans("client_4xx"))
    assert not any(400 <= s.http_status_code < 500 for s in clean)
    raw = _spans("high_cardinality")
    assert not any("{id}" in s.http_route for s in raw)
    assert any(s.kind == SpanKind.SERVER and s.url_path.startswith("/api/cart/") for s in raw)
    probes = [s for s in _spans("health_checks") if s.name == "GET /healthz"]
    assert probes
    checkouts = [s for s in _spans("low_traffic") if s.service == "checkout"]
    assert len(checkouts) < 0.3 * sum(s.service == "checkout" for s in clean)
    assert 0.5 < len(_spans("bursty_clients")) / len(clean) < 1.5


@pytest.mark.parametrize("condition", FLEET)
def test_eval_runs_the_fleet_conditions(condition: str) -> None:
    """spanwatch eval takes each condition (a short run: that it scores, not how well)."""
    assert condition in CONDITIONS
    report = evaluate([0], ["error_burst"], healthy_seconds=60, rate=2, condition=condition)
    assert report.condition == condition and report.patterns["error_burst"].runs == 1
    assert report.sent_spans > 0


def test_cpu_starvation_is_one_spike_at_the_service() -> None:
    """Every operation of catalog slower at once: one latency spike, rooted at catalog."""
    report = evaluate([0], ["cpu_starvation"], healthy_seconds=0)
    score = report.patterns["cpu_starvation"]
    assert (score.runs, score.detected, score.root_ok, score.pattern_ok) == (1, 1, 1, 1)
    assert score.matched == score.incidents == 1


def test_a_step_hidden_by_a_wide_tail_is_a_spike_not_a_drift() -> None:
    """The chain's pricing, a fifth of whose calls go on to a slow external API, slowed 6x in
    its own time at once: the spike test cannot see it under that tail, the drift test does,
    and the step makes it a latency spike."""
    report = evaluate([0], ["latency_spike"], healthy_seconds=0, topology="chain")
    score = report.patterns["latency_spike"]
    assert (score.detected, score.root_ok, score.pattern_ok) == (1, 1, 1)
