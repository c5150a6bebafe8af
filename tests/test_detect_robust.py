"""Detection on traffic unlike the shop: network delay in front of a callee, keys at one span
a window, sparse new errors, bursty callers, and one incident per fault."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest

from spanwatch.cli._eval import _parse_ns, _without_status
from spanwatch.detect import Detector, Settings
from spanwatch.detect._own import own_time
from spanwatch.detect._stats import Family, Finding, KeyStats, WindowAcc
from spanwatch.model import Pattern, Span, SpanBatch, SpanKind, StatusCode
from spanwatch.sim import DEFAULT_START_NS, NS, Fault, Simulator, chain, fanout, shop
from spanwatch.sim._fleet import quiet_entries

WARMUP = 900.0


def _incidents(sim: Simulator, seconds: float) -> list[dict[str, Any]]:
    """Each incident opened, as last updated."""
    detector = Detector()
    last: dict[str, dict[str, Any]] = {}
    for batch in sim.batches(seconds):
        for event in detector.process(batch):
            if event.type != "incident.resolved":
                incident = event.fields["incident"]
                last[incident["id"]] = incident
    return list(last.values())


def _roots(incidents: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (i["pattern"], i["root_cause"]["service"], i["root_cause"]["operation"]) for i in incidents
    ]


@pytest.mark.parametrize(
    ("topology", "service", "operation", "ms"),
    [
        (shop, "inventory", "/Inventory/Reserve", 60.0),
        (chain, "ledger", "POST /entries", 60.0),
        (fanout, "geo", "GET /lookup", 40.0),
    ],
    ids=["shop", "chain", "fanout"],
)
def test_network_delay_in_front_of_a_callee_is_blamed_on_the_callee(
    topology: Any, service: str, operation: str, ms: float
) -> None:
    """Calls into the callee slow by tens of ms while its own server spans stay normal: the
    callee is the root cause (not its caller), and the summary says where the time went."""
    fault = Fault(Pattern.LATENCY_SPIKE, service, operation, WARMUP, 240, ms, where="network")
    incidents = _incidents(Simulator(topology(), seed=4, faults=(fault,)), WARMUP + 360)
    assert _roots(incidents) == [("latency_spike", service, operation)]
    assert "network or ingress" in incidents[0]["summary"]


def test_a_key_at_one_request_a_window_can_alert() -> None:
    """The chain's admin path runs about once every two windows: when it starts failing, or
    turns slow (once its latency baseline holds 100 spans), the evidence of a few windows
    together is enough."""
    for pattern, magnitude, at in (
        (Pattern.ERROR_BURST, 0.9, 1800),
        (Pattern.LATENCY_SPIKE, 5.0, 2700),
    ):
        fault = Fault(pattern, "search", "POST /reindex", at, 240, magnitude)
        incidents = _incidents(Simulator(chain(), seed=2, faults=(fault,)), at + 300)
        assert _roots(incidents) == [(pattern.value, "search", "POST /reindex")], pattern
        detected = _parse_ns(incidents[0]["detected_at"])
        assert detected - DEFAULT_START_NS - at * NS <= 240 * NS  # within four minutes


def test_a_new_error_in_a_few_percent_of_requests_is_found_within_minutes() -> None:
    """A deploy-style new exception type in 3% of one operation's requests: no window alone
    holds enough, the evidence since it first appeared does."""
    fault = Fault(Pattern.NEW_ERROR, "orders", "/Orders/Price", WARMUP, 600, 0.03)
    incidents = _incidents(Simulator(chain(), seed=3, faults=(fault,)), WARMUP + 600)
    assert _roots(incidents) == [("new_error", "orders", "/Orders/Price")]
    assert incidents[0]["detected_at"] < "2026-03-02T00:19:00"  # within four minutes


def test_bursty_callers_raise_no_traffic_drop() -> None:
    """A batch job whose calls come three at a time, in a fleet at its daily low: quiet windows
    happen, and its own dispersion says they are ordinary."""
    assert _incidents(Simulator(fanout(), seed=1001, day_s=3600), 3600) == []


def test_a_slow_creep_is_one_incident() -> None:
    """A latency drift over ten minutes opens one incident, kept open while it creeps."""
    fault = Fault(Pattern.LATENCY_DRIFT, "catalog", "GET /api/products", WARMUP, 600, 3.0)
    incidents = _incidents(Simulator(shop(), seed=6, faults=(fault,)), WARMUP + 700)
    assert [(p, s) for p, s, _ in _roots(incidents)] == [("latency_drift", "catalog")]


def test_an_open_incident_does_not_absorb_a_later_fault() -> None:
    """A long drift in catalog is still open when payments starts failing: the failure opens
    its own incident at its own root."""
    faults = (
        Fault(Pattern.LATENCY_DRIFT, "catalog", "GET /api/products", WARMUP, 900, 3.0),
        Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP + 600, 240, 0.5),
    )
    incidents = _incidents(Simulator(shop(), seed=7, faults=faults), WARMUP + 1000)
    roots = {(p, s) for p, s, _ in _roots(incidents)}
    assert ("error_burst", "payments") in roots
    assert ("latency_drift", "catalog") in roots
    assert all(len(i["services"]) <= 12 for i in incidents)


def test_one_fault_in_two_operations_of_a_service_is_one_incident() -> None:
    """Both of catalog's operations start failing in the same window (shared code, a shared
    database): one incident, rooted in catalog, naming the fault once."""
    faults = tuple(
        Fault(Pattern.ERROR_BURST, "catalog", operation, WARMUP, 240, 0.5)
        for operation in ("GET /api/products", "GET /api/products/{id}")
    )
    incidents = _incidents(Simulator(shop(), seed=2, faults=faults), WARMUP + 360)
    roots = {i["root_cause"]["service"] for i in incidents}
    assert roots == {"catalog"}, _roots(incidents)
    assert len(incidents) == 1, _roots(incidents)


def _fed(counts: list[int]) -> tuple[list[float], list[int]]:
    """One key fed windows of these span counts: the count it expected after each window,
    and the windows (by index) in which it had a traffic drop."""
    settings = Settings()
    stats = KeyStats(settings.fast_epoch_windows, settings.slow_epoch_windows)
    out, expected = [], []
    for i, n in enumerate(counts):
        acc = None
        if n:
            acc = WindowAcc()
            for j in range(n):
                acc.add(5_000_000, "", bytes([i % 256, j % 256]) * 8, bytes([j % 256, i % 256]) * 4)
        found = stats.judge(acc, stats.windows >= settings.warmup_windows, settings)
        if any(f.family is Family.TRAFFIC for f in found):
            out.append(i)
        stats.learn(acc, bool(found), settings)
        expected.append(stats.expected_count(settings))
    return expected, out


def _drop_findings(counts: list[int]) -> list[int]:
    return _fed(counts)[1]


def _bursty(rng: random.Random, windows: int, per_window: float, burst: float = 10) -> list[int]:
    """Span counts of a key whose calls come in bursts (1 + Poisson(burst - 1) calls each, the
    bursts a Poisson process at per_window / burst a window)."""
    counts = []
    for _ in range(windows):
        bursts = _poisson(rng, per_window / burst)
        counts.append(sum(1 + _poisson(rng, burst - 1) for _ in range(bursts)))
    return counts


def _poisson(rng: random.Random, mean: float) -> int:
    k, p, floor = 0, rng.random(), math.exp(-mean)
    while p >= floor:
        k += 1
        p *= rng.random()
    return k


def test_a_bursty_key_expects_its_mean_count_and_its_gaps_are_no_drop() -> None:
    """Calls in bursts of ten: most windows are empty, in runs. A quiet run's windows are kept
    out of the expected count only while the run might be a drop; one that ends without a
    drop is learned then, so the key expects about its mean count (within 1.35x; learning
    its bursts alone, it expected 1.5-1.7x) and its gaps as its traffic falls through the day
    are no drop.
    A drop to nothing is still one, within 25 windows at about a burst a window."""
    rng = random.Random(7)
    for per_window in (1.0, 3.0, 6.0):
        counts = _bursty(rng, 400, per_window)
        expected, drops = _fed(counts)
        assert drops == []
        mean = sum(counts) / len(counts)
        learned = sum(expected[200:]) / 200  # as it stood over the last half
        assert 0.7 * mean < learned < 1.35 * mean, (per_window, mean, learned)
    assert _drop_findings(_bursty(rng, 200, 9) + _bursty(rng, 100, 6) + _bursty(rng, 200, 3)) == []
    drops = _drop_findings(_bursty(rng, 300, 10) + [0] * 40)  # about a burst a window
    assert drops and 300 < drops[0] <= 325, drops


def test_a_chance_busy_stretch_at_a_span_a_window_does_not_make_the_lull_after_it_a_drop() -> None:
    """A key at one span a window has a busy minute (five a window), then eight empty windows:
    its fast expected count still stands high, and against it the lull would be a drop. At the
    key's own rate eight empty windows are ordinary (about e⁻⁸), and the drop is judged against
    the lower of the fast and slow counts; thirty more empty windows are a drop."""
    usual = [1] * 200 + [5] * 6
    assert _drop_findings(usual + [0] * 8) == []
    assert _drop_findings(usual + [0] * 38)


def test_two_operations_of_a_starved_service_under_bursts_are_one_incident() -> None:
    """CPU starvation of the fan-out's collector-api under bursty clients: its status endpoint
    shows first, its events endpoint windows later; one incident."""
    from spanwatch.cli._eval import evaluate

    report = evaluate(
        [0], ["cpu_starvation"], healthy_seconds=0, condition="bursty_clients", topology="fanout"
    )
    score = report.patterns["cpu_starvation"]
    assert score.detected == 1 and score.matched == score.incidents == 1


def test_a_wrong_result_is_blamed_on_the_callee_that_answered_it() -> None:
    """Inventory answers 40% of its calls OK, at its usual speed, with a wrong result, and
    checkout fails on reading it: one new_error, rooted at inventory, told as its answers."""
    fault = Fault(Pattern.NEW_ERROR, "inventory", "/Inventory/Reserve", WARMUP, 240, 0.4, "answer")
    incidents = _incidents(Simulator(shop(), seed=8, faults=(fault,)), WARMUP + 360)
    assert [(p, s, o) for p, s, o in _roots(incidents)] == [
        ("new_error", "inventory", "/Inventory/Reserve")
    ]
    (incident,) = incidents
    assert "the answers of inventory" in incident["summary"]
    assert "checkout" in incident["services"]


def test_a_handler_failing_on_its_own_after_a_call_keeps_its_own_root() -> None:
    """Checkout fails on its own at a point drawn among its calls, with its own work left to
    do after the last call it made: its own error burst, not its callees'."""
    fault = Fault(Pattern.ERROR_BURST, "checkout", "/Checkout/PlaceOrder", WARMUP, 240, 0.5)
    incidents = _incidents(Simulator(shop(), seed=3, faults=(fault,)), WARMUP + 360)
    assert [(p, s) for p, s, _ in _roots(incidents)] == [("error_burst", "checkout")]


@pytest.mark.parametrize(
    ("gap_ms", "answered"),
    [(0.1, True), (1.5, False), (-2.0, False)],
    ids=["as-the-answer-came", "own-work-after", "call-outlived-it"],
)
def test_a_failure_is_on_an_answer_only_as_the_answer_arrives(
    gap_ms: float, answered: bool
) -> None:
    """A failed handler of 1 ms of its own (plus a 10 ms call) failed on its callee's answer
    when it ended within a fifth of its own time after the answer came; not when it had work
    of its own left, nor when the call outlived it."""
    from collections import defaultdict

    from spanwatch.detect import Settings
    from spanwatch.detect._keys import Key
    from spanwatch.detect._rootcause import RootCause
    from spanwatch.detect._traces import TraceSpan
    from spanwatch.model import SpanKind

    ms = 1_000_000
    end = 100 * ms
    gap = int(gap_ms * ms)
    # its own millisecond: before the call, and whatever of it is left after the answer
    duration = 10 * ms + max(ms, gap)
    handler = TraceSpan(
        b"h", b"", Key("checkout", "POST /order", SpanKind.SERVER), True, duration, ("", ""), end, 9
    )
    call = TraceSpan(
        b"c",
        b"h",
        Key("checkout", "POST /reserve", SpanKind.CLIENT),
        False,
        10 * ms,
        ("", ""),
        end - gap,
        9,
    )
    served = TraceSpan(
        b"s",
        b"c",
        Key("inventory", "POST /reserve", SpanKind.SERVER),
        False,
        9 * ms,
        ("", ""),
        end - gap - ms // 2,
        9,
    )
    children: defaultdict[bytes, list[TraceSpan]] = defaultdict(list)
    for sp in (call, served):
        children[sp.parent].append(sp)
    found = RootCause(Settings(), {}, {})._answered(handler, children)
    assert (found == served.key) is answered, found


@pytest.mark.parametrize(
    ("count", "total", "agree"),
    [(1, 1, True), (2, 2, True), (2, 3, False), (4, 5, True), (8, 10, True), (7, 10, False)],
)
def test_answers_agree_by_share_and_count(count: int, total: int, agree: bool) -> None:
    """80% of a finding's examples, and 4 of them, or all of them when there are fewer (a key
    at a span or two a window has an example or two a window)."""
    from spanwatch.detect import Settings
    from spanwatch.detect._rootcause import RootCause

    assert RootCause(Settings(), {}, {})._answers_agree(count, total) is agree


@pytest.mark.parametrize(
    ("calls", "own"),
    [
        ([], 100),
        ([(10, 30), (40, 50)], 70),  # one after the other
        ([(10, 60), (20, 40), (30, 70)], 40),  # in parallel: their union counts once
        ([(90, 150)], 90),  # a call that outlived the span counts to its end
        ([(-20, 5)], 95),  # one that began before it (a clock apart) from its start
    ],
)
def test_own_time_is_the_span_outside_the_union_of_its_calls(
    calls: list[tuple[int, int]], own: int
) -> None:
    assert own_time(0, 100, calls) == own


def test_a_starved_service_in_front_of_a_long_chain_is_found_by_its_own_time() -> None:
    """The chain's edge spends 1 ms of its own in front of a 25 ms chain; starved of CPU, that
    grows 8x while its whole span grows a fifth (under the spike test's tail and the drift
    test's margin): a latency spike at the edge, told by its own time, within a minute."""
    fault = Fault(Pattern.LATENCY_SPIKE, "edge", "", WARMUP, 300, 8.0, where="cpu")
    incidents = _incidents(Simulator(chain(), seed=0, faults=(fault,)), WARMUP + 360)
    assert _roots(incidents) == [("latency_spike", "edge", "GET /v2/quote")]
    (incident,) = incidents
    assert incident["evidence"]["metric"] == "own_time_ms"
    assert "its own time" in incident["summary"]
    assert _parse_ns(incident["detected_at"]) - DEFAULT_START_NS - WARMUP * NS <= 60 * NS
    # the evidence follows the own time window by window, as any other measure: high while
    # the fault lasts, back to its baseline after
    series = incident["series"]
    assert len(series) >= 10, series
    assert all(point["observed"] > 4 * point["baseline"] for point in series[:5]), series
    assert series[-1]["observed"] < 2 * series[-1]["baseline"], series


def _quiet(fault: Fault, seed: int, seconds: float, statuses: bool = True) -> list[dict[str, Any]]:
    """The shop at its midnight low (checkout, payments and what only checkout calls at a
    request or two a window: the eval's low_traffic), with the fault; its statuses stripped
    unless ``statuses``."""
    sim = Simulator(shop(), seed=seed, faults=(fault,))
    sim.topology.entries, sim.rate = quiet_entries(sim.topology, sim.rate, per_window=3.0)
    detector = Detector()
    last: dict[str, dict[str, Any]] = {}
    for batch in sim.batches(seconds):
        for event in detector.process(batch if statuses else _without_status(batch)):
            if event.type != "incident.resolved":
                last[event.fields["incident"]["id"]] = event.fields["incident"]
    return list(last.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_a_starved_service_at_a_request_or_two_a_window_is_found_by_its_own_time(
    seed: int,
) -> None:
    """Checkout at one or two orders a window, starved of CPU (its own time 6x, a 6 ms share
    of a span its calls take most of): no window alone holds three spans over the bar, a run
    of them does (or, by then, of its whole spans). One incident, within two minutes."""
    fault = Fault(Pattern.LATENCY_SPIKE, "checkout", "", WARMUP, 300, 6.0, where="cpu")
    incidents = _quiet(fault, seed, WARMUP + 420)
    assert _roots(incidents) == [("latency_spike", "checkout", "/Checkout/PlaceOrder")]
    assert _parse_ns(incidents[0]["detected_at"]) - DEFAULT_START_NS - WARMUP * NS <= 120 * NS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wrong_result_at_a_request_or_two_a_window_without_statuses_is_one_incident(
    seed: int,
) -> None:
    """Payments answers 40% of checkout's one or two calls a window wrong, and nothing records
    a status: checkout stops on the answer, before the write and the publish its spans end
    with (its usual tail is after a producer's call, not a client's). The run of windows finds
    it, and the windows of the run that show nothing (most, at this rate) do not resolve it:
    one incident, rooted at payments, within three minutes."""
    fault = Fault(Pattern.NEW_ERROR, "payments", "POST /v1/charges", WARMUP, 300, 0.4, "answer")
    incidents = _quiet(fault, seed, WARMUP + 420, statuses=False)
    assert _roots(incidents) == [("new_error", "payments", "POST /v1/charges")]
    assert incidents[0]["evidence"]["metric"] == "abrupt_end_rate"
    assert _parse_ns(incidents[0]["detected_at"]) - DEFAULT_START_NS - WARMUP * NS <= 180 * NS


@pytest.mark.parametrize(
    ("service", "operation"),
    [("payments", "POST /v1/charges"), ("checkout", "/Checkout/PlaceOrder")],
)
def test_a_handler_stopping_short_at_a_request_or_two_a_window_without_statuses_is_found(
    service: str, operation: str
) -> None:
    """Payments (or checkout) at a request or two a window raises on 40% of them, and nothing
    records a status: the failing spans stop before their usual calls (the PSP; checkout's
    next call), and a run of windows shows it. One incident at the service, within four
    minutes."""
    fault = Fault(Pattern.ERROR_BURST, service, operation, WARMUP, 300, 0.4)
    incidents = _quiet(fault, 0, WARMUP + 420, statuses=False)
    assert _roots(incidents) == [("error_burst", service, operation)]
    assert incidents[0]["evidence"]["metric"] == "missing_call_rate"
    assert _parse_ns(incidents[0]["detected_at"]) - DEFAULT_START_NS - WARMUP * NS <= 240 * NS


def _inner(span_id: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in span_id)


def _with_controllers(batch: SpanBatch) -> SpanBatch:
    """The batch as the OpenTelemetry Java agent with controller spans gives it: an INTERNAL
    span (the controller method) inside each server and consumer span, the calls under it."""
    out: list[Span] = []
    for span in batch.rows():
        if span.kind in (SpanKind.CLIENT, SpanKind.PRODUCER) and span.parent_span_id:
            span = replace(span, parent_span_id=_inner(span.parent_span_id))
        out.append(span)
        if span.kind in (SpanKind.SERVER, SpanKind.CONSUMER):
            pad = (span.end_ns - span.start_ns) // 100
            out.append(
                replace(
                    span,
                    span_id=_inner(span.span_id),
                    parent_span_id=span.span_id,
                    kind=SpanKind.INTERNAL,
                    name=f"{span.service.title()}Controller.handle",
                    start_ns=span.start_ns + pad,
                    end_ns=span.end_ns - pad,
                    http_route="",
                    http_method="",
                    http_status_code=0,
                    rpc_system="",
                    rpc_service="",
                    rpc_method="",
                    messaging_system="",
                )
            )
    return SpanBatch.from_spans(out)


@pytest.mark.parametrize(
    ("topology", "fault", "expected"),
    [
        (
            chain,
            Fault(Pattern.NEW_ERROR, "tax", "/Tax/Compute", WARMUP, 300, 0.4, "answer"),
            ("new_error", "tax", "/Tax/Compute"),
        ),
        (
            shop,
            Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP, 300, 0.4),
            ("error_burst", "payments", "POST /v1/charges"),
        ),
        (
            chain,
            Fault(Pattern.LATENCY_SPIKE, "edge", "", WARMUP, 300, 8.0, where="cpu"),
            ("latency_spike", "edge", "GET /v2/quote"),
        ),
    ],
    ids=["wrong_result", "stops_short", "starved"],
)
def test_controller_spans_between_a_handler_and_its_calls_hide_nothing(
    topology: Any, fault: Fault, expected: tuple[str, str, str]
) -> None:
    """With an INTERNAL controller span between each handler and its calls, and no status
    recorded: a wrong result, a handler stopping short and a starved service are found as
    without them, at the same root (the controller's calls are the handler's)."""
    sim = Simulator(topology(), seed=0, faults=(fault,))
    detector = Detector()
    last: dict[str, dict[str, Any]] = {}
    for batch in sim.batches(WARMUP + 360):
        for event in detector.process(_with_controllers(_without_status(batch))):
            if event.type != "incident.resolved":
                last[event.fields["incident"]["id"]] = event.fields["incident"]
    incidents = sorted(last.values(), key=lambda i: i["detected_at"])
    assert _roots(incidents)[:1] == [expected], _roots(incidents)
    assert _parse_ns(incidents[0]["detected_at"]) - DEFAULT_START_NS - WARMUP * NS <= 60 * NS


def test_a_slow_callee_leaves_its_callers_own_time_alone() -> None:
    """The chain's ledger slowed 5x: every caller above it is slower by as much, but none of
    that is their own time, and the one incident is the ledger's."""
    fault = Fault(Pattern.LATENCY_SPIKE, "ledger", "POST /entries", WARMUP, 300, 5.0)
    detector = Detector()
    metrics = []
    for batch in Simulator(chain(), seed=5, faults=(fault,)).batches(WARMUP + 360):
        for event in detector.process(batch):
            if event.type == "incident.opened":
                incident = event.fields["incident"]
                metrics.append((incident["root_cause"]["service"], incident["evidence"]["metric"]))
    assert metrics and all(service == "ledger" for service, _ in metrics), metrics
    assert "own_time_ms" not in {metric for _, metric in metrics}


@pytest.mark.parametrize(
    ("calls", "tail"),
    [
        ([(10, 30)], 70),
        ([(-20, 5)], 95),  # began before its parent
        ([(90, 150)], -50),  # outlived it
        ([(120, 150)], -50),  # wholly after it
        ([(40, 40)], 60),  # no length
        ([(10, 60), (20, 40), (30, 70)], 30),
        ([(0, 40), (41, 100)], 0),  # ended as its last call answered
        ([(0, 40), (41, 100), (10, 20)], 0),  # the last to answer counts, in any order
    ],
)
def test_the_call_graph_pass_takes_own_time_as_own_time_does(
    calls: list[tuple[int, int]], tail: int
) -> None:
    """The pass over a window's traces (with its shortcut for a handler with one call) notes
    the same own time as :func:`own_time`, and its tail: from its last call's answer to its
    end, with that call's key."""
    from spanwatch.detect import Settings
    from spanwatch.detect._keys import Key
    from spanwatch.detect._structure import Structure
    from spanwatch.detect._traces import TraceSpan
    from spanwatch.model import SpanKind

    settings = Settings()
    window, base = 7, 7 * settings.window_ns
    handler = Key("api", "GET /x", int(SpanKind.SERVER))
    client = Key("api", "GET db", int(SpanKind.CLIENT))
    spans = [TraceSpan(b"h", b"", handler, False, 100, ("", ""), base + 100, window)]
    spans += [
        TraceSpan(b"c%d" % i, b"h", client, False, end - start, ("", ""), base + end, window)
        for i, (start, end) in enumerate(calls)
    ]
    flat = [field for span in spans for field in span]
    structure = Structure(settings, {}, defaultdict(set), {})
    structure.learn_edges([flat], [b"t"], window, True)
    assert structure.own == {handler: [(own_time(0, 100, calls), b"t", b"h", tail, client)]}


def test_a_span_ends_on_an_answer_by_its_keys_usual_tail_not_its_own_time() -> None:
    """A handler works 1 ms before its call and 1 ms after. Its work before growing 6x (a
    slow parse, a lock) leaves its tail as it was: no span ended on an answer. Its tail
    collapsing to 0.05 ms (it fails on reading the answer) is a new error, every span of it."""
    from spanwatch.detect._keys import Key
    from spanwatch.detect._own import OwnBaseline, abrupt_findings
    from spanwatch.model import SpanKind

    settings = Settings()
    key = Key("api", "GET /x", int(SpanKind.SERVER))
    client = Key("api", "GET db", int(SpanKind.CLIENT))
    stats = {key: KeyStats(settings.fast_epoch_windows, settings.slow_epoch_windows)}
    stats[key].windows = settings.warmup_windows
    rng = random.Random(1)

    def window(before_ms: float, tail_ms: float) -> list[Any]:
        tails = [tail_ms * rng.uniform(0.7, 1.3) for _ in range(50)]
        return [
            (int((before_ms + t) * 1e6), bytes([i]) * 16, bytes([i]) * 8, int(t * 1e6), client)
            for i, t in enumerate(tails)
        ]

    base = OwnBaseline()
    for _ in range(40):
        spans = window(1, 1)
        base.learn(spans, sorted(s[0] for s in spans)[25], settings)
    found, rates = abrupt_findings({key: window(6, 1)}, {key: base}, stats, settings)
    assert found == {} and rates == {key: (0, 50)}
    found, rates = abrupt_findings({key: window(1, 0.05)}, {key: base}, stats, settings)
    assert found[key].metric == "abrupt_end_rate" and rates == {key: (50, 50)}
    assert len(found[key].examples) == 5


def test_a_rolling_deploy_is_one_deploy_and_a_rollback_another() -> None:
    """Old and new instances serve side by side for 20 s, their spans interleaved: one deploy,
    when the new version first shows. Going back to the old version once it is no longer live
    is a second; a service's first version is none, and a fleet back from a pause (every
    version stale) deploys nothing."""
    from spanwatch.detect._lifecycle import Deploys

    deploys = Deploys(Settings())
    second = NS
    t = DEFAULT_START_NS
    deploys.track(["cart"], [""], ["1.0"], [t])
    for step in range(20):  # the rollout: both versions in every batch
        at = t + (60 + step) * second
        deploys.track(["cart", "cart", "cart"], ["", "", ""], ["1.0", "1.1", "1.0"], [at] * 3)
    for step in range(600):  # the new version alone, for ten minutes and more
        deploys.track(["cart"], [""], ["1.1"], [t + (80 + step) * second])
    rollback = t + 700 * second
    deploys.track(["cart"], [""], ["1.0"], [rollback])
    for step in range(20):  # both again, then an hour with no traffic at all
        at = rollback + step * second
        deploys.track(["cart", "cart"], ["", ""], ["1.1", "1.0"], [at] * 2)
    deploys.track(["cart", "cart"], ["", ""], ["1.0", "1.1"], [rollback + 3600 * second] * 2)
    found = [(d.old_version, d.new_version, d.at_ns) for _, d in deploys.deploys]
    assert found == [("1.0", "1.1", t + 60 * second), ("1.1", "1.0", rollback)]


def test_an_incident_updated_as_its_fault_ends_tells_the_worst_seen() -> None:
    """Payments fails for four minutes, then recovers: the evidence follows it down to 0%,
    while the summary (what an alert or a reader sees) keeps the worst error rate seen, not
    "error rate 0%"."""
    fault = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP, 240, 0.5)
    incidents = _incidents(Simulator(shop(), seed=2, faults=(fault,)), WARMUP + 400)
    (incident,) = incidents
    evidence = incident["evidence"]
    assert evidence["observed"] < 0.05 < 0.4 < evidence["peak"], evidence
    assert f"error rate {evidence['peak']:.0%}" in incident["summary"], incident["summary"]


def _window(spans: int, signatures: dict[str, int]) -> WindowAcc:
    """A key's window of ``spans`` spans, ``signatures[s]`` of them failed with signature s."""
    failed = [s for s, n in signatures.items() for _ in range(n)]
    acc = WindowAcc()
    for i in range(spans):
        signature = failed[i] if i < len(failed) else ""
        acc.add(1_000_000, signature, b"t" * 16, b"%07d" % i + b"s")
    return acc


def test_new_error_signatures_are_counted_per_operation_and_a_bare_error_is_none() -> None:
    """A new exception type that a busy operation of a service raises now and then does not
    lend its count to a quiet operation of the same service that raises it once; and a failure
    with neither an exception type nor a message (a 4xx a client span marks) is nothing new."""
    from spanwatch.detect._keys import Key
    from spanwatch.detect._new_errors import NewErrors

    settings = Settings()
    busy, quiet = (Key("orders", op, SpanKind.SERVER, "") for op in ("GET /a", "GET /b"))
    stats = {key: KeyStats(60, 360) for key in (busy, quiet)}
    for key, per_window in ((busy, 200), (quiet, 2)):
        stats[key].count_ewma, stats[key].err_n = float(per_window), 80.0 * per_window
    errors = NewErrors(settings, stats)
    exception = "java.lang.NullPointerException"
    for window in range(100, 105):
        errors.findings(busy, _window(200, {exception: 1}), window, learning=False)
    assert errors.findings(quiet, _window(2, {exception: 1}), 105, learning=False) == []
    for window in range(100, 110):  # a steady 4xx, three a window
        assert errors.findings(busy, _window(200, {"error": 3}), window, learning=False) == []


def test_a_burst_of_4xx_answers_is_the_callees_and_no_network_trouble(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catalog and cart start answering 404 to most lookups by id (their server spans UNSET
    with the code, the callers' client spans ERROR with it, as the instrumentations mark
    them): the callees answered, so each incident is one callee's, and no summary says
    anything of network or ingress in front of it."""
    from spanwatch.sim import _fleet

    detector = Detector()
    last: dict[str, dict[str, Any]] = {}
    sim = Simulator(shop(), seed=3)
    for batch in sim.batches(WARMUP + 240):
        if batch.end_ns[0] - DEFAULT_START_NS > WARMUP * NS:
            monkeypatch.setattr(_fleet, "LOOKUP_SHARE", 0.6)
        for event in detector.process(_fleet.answer_4xx(batch)):
            if event.type != "incident.resolved":
                last[event.fields["incident"]["id"]] = event.fields["incident"]
    incidents = list(last.values())
    assert sorted((s, o) for _, s, o in _roots(incidents)) == [
        ("cart", "GET /api/cart/{id}"),
        ("catalog", "GET /api/products/{id}"),
    ]
    assert not [i["summary"] for i in incidents if "network" in i["summary"]]


def _unreachable(batch: SpanBatch, service: str, share: float) -> SpanBatch:
    """The batch with ``service`` unreachable for ``share`` of the traces (by trace id): its
    spans never come, and its callers' calls into it fail on a deadline, with no answer."""
    out = []
    for span in batch.rows():
        if span.trace_id[-1] < share * 256:
            if span.service == service:
                continue
            if span.kind == SpanKind.CLIENT and span.peer_service == service:
                span = replace(
                    span,
                    status_code=int(StatusCode.ERROR),
                    status_message="context deadline exceeded",
                    exception_type="DeadlineExceeded",
                )
        out.append(span)
    return SpanBatch.from_spans(out)


def test_calls_that_never_reach_their_callee_are_the_callees() -> None:
    """Half of checkout's calls into inventory time out with no answer (no server span under
    them): the callee is the root cause, not checkout's client key."""
    detector = Detector()
    last: dict[str, dict[str, Any]] = {}
    for batch in Simulator(shop(), seed=5).batches(WARMUP + 240):
        if batch.end_ns[0] - DEFAULT_START_NS > WARMUP * NS:
            batch = _unreachable(batch, "inventory", 0.5)
        for event in detector.process(batch):
            if event.type != "incident.resolved":
                last[event.fields["incident"]["id"]] = event.fields["incident"]
    incidents = list(last.values())
    assert {(s, o) for _, s, o in _roots(incidents)} == {("inventory", "/Inventory/Reserve")}


def _latency_key(
    rng: random.Random, windows: int, per_window: float, slow: float, pause_ms: tuple[int, int]
) -> tuple[KeyStats, list[int]]:
    """A key of lognormal spans (median 5 ms) at about ``per_window`` spans a window, learned
    for 200 healthy windows, then ``windows`` more in which a share ``slow`` of spans are held
    up by a pause in ``pause_ms``; the stats, and the windows (counted from the fault's
    first) that gave a finding of spans far past the p99 (``max_latency_ms``)."""
    settings = Settings()
    stats = KeyStats(settings.fast_epoch_windows, settings.slow_epoch_windows)
    found: list[int] = []
    for window in range(200 + windows):
        acc = WindowAcc()
        for i in range(_poisson(rng, per_window)):
            ms = 5.0 * math.exp(rng.gauss(0, 0.4))
            if window >= 200 and rng.random() < slow:
                ms += rng.uniform(*pause_ms)
            acc.add(int(ms * 1e6), "", b"t" * 16, b"%d-%d" % (window, i))
        findings = stats.judge(acc if acc.count else None, stats.windows >= 12, settings)
        if any(f.metric == "max_latency_ms" for f in findings):
            found.append(window - 200)
        stats.learn(acc if acc.count else None, bool(findings), settings)
    return stats, found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spans_far_past_the_usual_are_judged_apart_from_slow_ones(seed: int) -> None:
    """Packets lost on a quarter of the calls at a request a window (each lost one 200 ms to
    a second late, retransmitted), or GC pauses in 5% of a busy key's spans: no window holds
    a fifth of its spans slow, nor three, and the slow share of a run stays under a fifth;
    spans that far past the p99 are rare enough that a few of them over a few windows tell.
    Healthy keys never show it, nor does one pause that held up one window's spans at once."""
    rng = random.Random(seed)
    _, lost = _latency_key(rng, 48, 1.0, 0.25, (200, 1000))
    assert lost and lost[0] <= 36, lost  # within six minutes
    _, paused = _latency_key(rng, 30, 40.0, 0.05, (100, 500))
    assert paused and paused[0] <= 6, paused
    for per_window in (1.0, 40.0):
        _, healthy = _latency_key(rng, 2000, per_window, 0.002, (20, 60))
        assert healthy == [], (per_window, healthy)
    # one pause holding up four spans of one window (a tenth: no spike), in a healthy key
    settings = Settings()
    stats, _ = _latency_key(rng, 0, 40.0, 0.0, (0, 0))
    for window in range(3):
        acc = WindowAcc()
        for i in range(40):
            ms = 5.0 * math.exp(rng.gauss(0, 0.4)) + (300.0 if window == 0 and i < 4 else 0)
            acc.add(int(ms * 1e6), "", b"t" * 16, b"x%d-%d" % (window, i))
        assert stats.judge(acc, True, settings) == [], window
        stats.learn(acc, False, settings)


def test_a_run_from_a_few_spans_is_read_at_every_rate_they_allow() -> None:
    """One slow span of one does not make a run at 100% that the next normal span ends; a
    busy key's clean window still ends a run at 40%."""
    from spanwatch.detect._stats import consistent

    settings = Settings()
    assert consistent(0, 1, 1.0, 1.0, settings)
    assert consistent(0, 2, 2.0, 3.0, settings)
    assert not consistent(0, 20, 8.0, 20.0, settings)
    assert not consistent(0, 200, 80.0, 200.0, settings)  # a rate well known


def test_a_latency_root_walk_follows_the_slow_spans_not_the_rest_of_the_slowest() -> None:
    """At a span or two a window, a run's latency finding holds one slow span among normal
    ones: the walk follows the slow one (into the callee it waited on, its own span normal:
    the edge), and the normal ones do not outvote it for the caller."""
    from collections import OrderedDict

    from spanwatch.detect._keys import Key
    from spanwatch.detect._rootcause import EDGE, RootCause
    from spanwatch.detect._stats import bucketed

    ms = 1_000_000
    settings = Settings()
    gateway = Key("ui", "GET /food", SpanKind.SERVER, "")
    call = Key("ui", "GET food", SpanKind.CLIENT, "")
    food = Key("food", "GET /foods", SpanKind.SERVER, "")
    stats = {}
    for key, typical in ((gateway, 20), (call, 18), (food, 15)):
        stats[key] = KeyStats(settings.fast_epoch_windows, settings.slow_epoch_windows)
        stats[key].fast.learn(bucketed([typical * ms + i * 10_000 for i in range(200)]))
    traces: OrderedDict[bytes, list[Any]] = OrderedDict()
    acc = WindowAcc()
    for i, delay in enumerate((0, 0, 600)):  # the third call waited 600 ms in front of food
        trace = b"%015d" % i + b"t"
        spans = [
            (b"g%07d" % i, b"", gateway, False, (20 + delay) * ms, ("", ""), 1000 * ms, 1),
            (b"c%07d" % i, b"g%07d" % i, call, False, (18 + delay) * ms, ("", ""), 999 * ms, 1),
            (b"f%07d" % i, b"c%07d" % i, food, False, 15 * ms, ("", ""), 998 * ms, 1),
        ]
        traces[trace] = [value for span in spans for value in span]
        acc.add((20 + delay) * ms, "", trace, b"g%07d" % i)
    # a run's finding, renewed by this window's one slow span
    slow = Finding(Family.LATENCY, "p50_latency_ms", 20.0, 20.0, "ms", 1.0, 1)
    finder = RootCause(settings, stats, {})
    root, _, _, front, _ = finder.find(traces, gateway, slow, acc, set(), {})
    assert (root.service, root.operation, front) == ("food", "GET /foods", EDGE)
