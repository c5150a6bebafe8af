"""The detector core: patterns, root causes, silence, event time, bounded state, snapshots."""

from __future__ import annotations

import copy
import pickle
import random
from collections import Counter
from typing import Any

import pytest

from spanwatch.cli._eval import TARGETS, run_detector
from spanwatch.detect import Detector, Settings, template
from spanwatch.model import Event, Pattern, SpanBatch, SpanKind, StatusCode
from spanwatch.sim import NS, Fault, Simulator

WARMUP = 600.0


def _events(detector: Detector, batches: list[SpanBatch]) -> list[dict[str, Any]]:
    out = []
    for batch in batches:
        out += [{"type": e.type, **e.fields["incident"]} for e in detector.process(batch)]
    return out


@pytest.mark.parametrize("pattern", list(Pattern), ids=lambda p: p.value)
def test_each_pattern_is_detected_with_its_root_cause(pattern: Pattern) -> None:
    """A fault of every pattern opens one incident naming the pattern and the root cause."""
    service, operation, magnitude = TARGETS[pattern][0]
    duration = 600.0 if pattern is Pattern.LATENCY_DRIFT else 240.0
    sim = Simulator(
        seed=11, faults=(Fault(pattern, service, operation, WARMUP, duration, magnitude),)
    )
    (label,) = sim.labels
    incidents = run_detector(sim, WARMUP + duration + 120)
    assert len(incidents) == 1, incidents
    (incident,) = incidents
    assert incident.pattern == pattern.value
    assert incident.root[0] == label.root_cause.service
    if pattern is not Pattern.SLOW_DEPENDENCY:
        assert incident.root[1] == label.root_cause.operation
    assert (
        label.start_ns
        <= incident.detected_ns
        <= label.start_ns + (300 if pattern is Pattern.LATENCY_DRIFT else 60) * NS
    )


def test_silence_on_healthy_traffic_through_a_whole_day_and_a_deploy() -> None:
    """A compressed day of load (3x swing), rare errors, outliers, a no-op deploy: no incident."""
    for seed in (21, 22):
        assert run_detector(Simulator(seed=seed, day_s=3600), 3600) == []


def test_incidents_open_update_and_resolve_with_contract_fields() -> None:
    """An incident opens, then resolves after the fault ends; its fields follow contract 5."""
    fault = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP, 120, 0.5)
    events = _events(Detector(), list(Simulator(seed=3, faults=(fault,)).batches(WARMUP + 300)))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "incident.opened" and kinds[-1] == "incident.resolved"
    opened, resolved = events[0], events[-1]
    assert opened["id"] == resolved["id"]
    assert 1 <= opened["severity"] <= 3
    assert opened["root_cause"] == {"service": "payments", "operation": "POST /v1/charges"}
    assert opened["started_at"].endswith("Z") and len(opened["started_at"]) == 30
    assert opened["trace_ids"] and all(len(t) == 32 for t in opened["trace_ids"])
    assert opened["example"]["trace_id"] == opened["trace_ids"][0]
    assert opened["evidence"]["metric"] == "error_rate"
    assert opened["evidence"]["observed"] > 10 * opened["evidence"]["baseline"]
    assert "payments" in opened["services"]
    assert resolved["status"] == "resolved" and resolved["resolved_at"] > opened["detected_at"]


def _signature(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["type"], e["id"], e["pattern"], e["severity"], e["detected_at"]) for e in events]


def _rebatch(batches: list[SpanBatch], ticks: int, seed: int) -> list[SpanBatch]:
    """The same spans in batches of ``ticks`` ticks, shuffled within each batch."""
    rng = random.Random(seed)
    out = []
    for i in range(0, len(batches), ticks):
        rows = [row for batch in batches[i : i + ticks] for row in batch.rows()]
        rng.shuffle(rows)
        out.append(SpanBatch.from_spans(rows))
    return out


def test_replay_at_any_speed_gives_the_same_incidents() -> None:
    """The same spans in 0.25 s, 1 s or 30 s batches, in any order within a batch: same events."""
    fault = Fault(Pattern.LATENCY_SPIKE, "inventory", "/Inventory/Reserve", WARMUP, 120, 8)
    sim = Simulator(seed=4, faults=(fault,))
    base = list(sim.batches(WARMUP + 300, tick_s=0.25))
    end = sim.start_ns + int((WARMUP + 300) * NS)
    results = []
    for ticks in (1, 4, 120):
        detector = Detector()
        events = _events(detector, _rebatch(base, ticks, seed=ticks))
        events += [{"type": e.type, **e.fields["incident"]} for e in detector.advance(end + NS)]
        results.append(_signature(events))
    assert results[0] and results[0] == results[1] == results[2]
    assert results[0][0][0] == "incident.opened" and results[0][-1][0] == "incident.resolved"


def test_snapshot_and_restore_continue_exactly() -> None:
    """A detector pickled mid-run and restored produces what the uninterrupted one does."""
    fault = Fault(Pattern.TRAFFIC_DROP, "frontend", "POST /checkout", WARMUP, 120, 0.95)
    batches = list(Simulator(seed=5, faults=(fault,)).batches(WARMUP + 300))
    straight = Detector()
    expected = _events(straight, batches)
    first = Detector()
    half = len(batches) // 2
    before = _events(first, batches[:half])
    restored = pickle.loads(pickle.dumps(first))
    assert before + _events(restored, batches[half:]) == expected
    assert expected


def test_same_input_same_output_and_input_not_mutated() -> None:
    """Deterministic (the detector draws no random numbers); the batches handed in are left
    as they were."""
    fault = Fault(Pattern.NEW_ERROR, "cart", "GET /api/cart/{id}", WARMUP, 120, 1)
    batches = list(Simulator(seed=6, faults=(fault,)).batches(WARMUP + 200))
    frozen = copy.deepcopy(batches)
    a = _events(Detector(), batches)
    b = _events(Detector(), batches)
    assert a == b and a
    assert [x.columns() for x in batches] == [x.columns() for x in frozen]


def test_state_stays_bounded_under_a_million_distinct_names() -> None:
    """Names that templating cannot fold still cost at most max_keys baselines."""
    detector = Detector(Settings(max_keys=2000, max_traces=1000))
    start = 1_800_000_000 * NS
    letters = "abcdefghijklmnopqrstuvwxyz"
    size = 10_000
    for chunk in range(100):
        ids = range(chunk * size, (chunk + 1) * size)
        starts = [start + n * 1_000_000 for n in ids]
        batch = SpanBatch.filled(
            size,
            trace_id=[(n + 1).to_bytes(16, "big") for n in ids],
            span_id=[(n + 1).to_bytes(8, "big") for n in ids],
            service=["svc"] * size,
            name=["op-" + "".join(letters[(n // 26**k) % 26] for k in range(5)) for n in ids],
            kind=[SpanKind.SERVER] * size,
            start_ns=starts,
            end_ns=[t + 500_000 for t in starts],
        )
        detector.process(batch)
    assert detector.tracked_keys <= 2000
    assert len(detector._stats) <= 2000
    assert len(detector._traces) <= 1000
    assert detector.dropped_keys >= 1_000_000 - 2000


def test_a_batch_of_more_keys_than_max_keys_with_client_calls_is_filed() -> None:
    """One batch holding more keys than max_keys, bare-named client calls among them: the
    evicted keys' spans go, and the client calls of the rest are still described."""
    detector = Detector(Settings(max_keys=50))
    start = 1_800_000_000 * NS
    size = 400
    starts = [start + n * 1_000_000 for n in range(size)]
    batch = SpanBatch.filled(
        size,
        trace_id=[(n // 2 + 1).to_bytes(16, "big") for n in range(size)],
        span_id=[(n + 1).to_bytes(8, "big") for n in range(size)],
        parent_span_id=[b"" if n % 2 == 0 else n.to_bytes(8, "big") for n in range(size)],
        service=[f"svc-{n // 2}" for n in range(size)],
        name=[f"op-{n}" if n % 2 == 0 else "GET" for n in range(size)],
        kind=[SpanKind.SERVER if n % 2 == 0 else SpanKind.CLIENT for n in range(size)],
        server_address=["" if n % 2 == 0 else f"host-{n}.internal" for n in range(size)],
        http_method=["" if n % 2 == 0 else "GET" for n in range(size)],
        start_ns=starts,
        end_ns=[t + 500_000 for t in starts],
    )
    detector.process(batch)
    assert detector.tracked_keys <= 50
    assert detector.dropped_keys >= size - 50


def test_templates_fold_ids_numbers_and_emails() -> None:
    """High-cardinality parts of span names become placeholders."""
    assert template("GET /api/cart/01e4a745-dc28-4b3c-a123-0123456789ab") == "GET /api/cart/{id}"
    assert template("GET /orders/12345/items/7") == "GET /orders/{n}/items/{n}"
    assert template("GET /obj/5f2a9c0d11ee") == "GET /obj/{id}"
    assert template("mail bob@example.com") == "mail {email}"
    assert template("/Checkout/PlaceOrder") == "/Checkout/PlaceOrder"


def test_late_spans_are_counted_not_used() -> None:
    """A span whose window has closed is counted as late and changes nothing."""
    detector = Detector()
    batches = list(Simulator(seed=7).batches(120))
    for batch in batches:
        detector.process(batch)
    detector.process(batches[0])  # two minutes late
    assert detector.late_spans == len(batches[0])


def test_events_are_incident_events() -> None:
    """The detector emits only incident.* events, each carrying an incident."""
    fault = Fault(Pattern.ERROR_BURST, "catalog", "GET /api/products", WARMUP, 60, 0.4)
    detector = Detector()
    events: list[Event] = []
    for batch in Simulator(seed=8, faults=(fault,)).batches(WARMUP + 200):
        events += detector.process(batch)
    assert events and {e.type.split(".")[0] for e in events} == {"incident"}
    assert all(e.fields["incident"]["pattern"] in {p.value for p in Pattern} for e in events)
    assert StatusCode.ERROR == 2


def test_events_handed_over_mid_batch_are_the_events_returned() -> None:
    """With on_events, a window closed part-way through a batch is reported at once: the same
    events, in the same order, as without it (where they come back at the end)."""
    fault = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP, 120, 0.5)
    batches = list(Simulator(seed=8, faults=(fault,)).batches(WARMUP + 300, tick_s=30))
    plain, early = Detector(), Detector()
    returned: list[Event] = []
    handed: list[Event] = []
    for batch in batches:
        returned += plain.process(batch)
        handed += early.process(batch, handed.extend)
    assert handed == returned
    assert any(e.type == "incident.opened" for e in handed)


def test_the_latency_baseline_gives_the_quantiles_of_ddsketch_itself() -> None:
    """Epochs learned a window at a time, by bucket, give exactly the quantiles of ddsketch's
    own DDSketch fed every duration one by one (and merged across the two epochs)."""
    from ddsketch import DDSketch

    from spanwatch.detect._stats import SKETCH_ACCURACY, Sketches, bucketed

    def reference(windows: list[list[int]]) -> DDSketch:
        sketch = DDSketch(SKETCH_ACCURACY)
        for durations in windows:
            for d in durations:
                sketch.add(float(max(d, 0)))
        return sketch

    from spanwatch.detect._stats import _MAPPING

    rng = random.Random(1)
    values = [rng.randrange(1, 10**13) for _ in range(20_000)] + [1, 2, 3, 10**18]
    assert bucketed(values)[0] == Counter(map(_MAPPING.key, values))
    for _ in range(20):
        epoch = rng.randrange(1, 6)
        ours, learned = Sketches(epoch), []
        for _ in range(rng.randrange(1, 4 * epoch + 2)):
            scale = rng.uniform(5, 20)
            durations = (
                [
                    int(rng.lognormvariate(scale, rng.uniform(0.1, 2)))
                    for _ in range(rng.randrange(1, 300))
                ]
                + [0] * rng.randrange(3)
                + [-5] * rng.randrange(2)
            )
            ours.learn(bucketed(durations))
            learned.append(durations)
            # what the two epochs hold: the windows since the last rotation, and before that
            done = len(learned) // epoch * epoch
            current = reference(learned[done:])
            previous = reference(learned[done - epoch : done]) if done else None
            if previous is None:
                expected = current
            elif current.count < 50:
                expected = previous
            else:
                expected = reference(learned[done - epoch :])
            assert ours.count() == current.count + (previous.count if previous else 0)
            for q in (0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0):
                assert ours.quantile(q) == float(expected.get_quantile_value(q) or 0.0), q


@pytest.mark.parametrize("chunked", [False, True], ids=["one-by-one", "in-chunks"])
@pytest.mark.parametrize("spans", [1, 5, 300, 511, 512, 513, 1500, 5000])
def test_window_sample_slowest_and_examples_match_a_brute_force_reading(
    spans: int, chunked: bool
) -> None:
    """The bottom-k sample, the 8 slowest and the examples, however they are read in between
    and however the spans are handed in (one by one, or in chunks of any size)."""
    from spanwatch.detect._stats import RESERVOIR, WindowAcc

    rng = random.Random(spans)
    acc, seen, failed = WindowAcc(), [], []
    rows = []
    for _ in range(spans):
        span_id = rng.getrandbits(64).to_bytes(8, "big")
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        duration = rng.choice([rng.randrange(10**6), 5000])  # ties, too
        signature = rng.choice(["", "", "", "Timeout", "Refused"])
        rows.append((duration, signature, trace_id, span_id))
        seen.append((span_id, duration, trace_id))
        if signature:
            failed.append((span_id, trace_id, signature))
    done = 0
    while done < spans:
        size = rng.choice([1, 2, 7, 100, 600]) if chunked else 1
        chunk = rows[done : done + size]
        acc.add_many(
            [d for d, _, _, _ in chunk],
            [t for _, _, t, _ in chunk],
            [s for _, _, _, s in chunk],
            [(sig, s, t) for _, sig, t, s in chunk if sig],
        )
        done += len(chunk)
        if done - len(chunk) <= spans // 2 < done:
            assert len(acc.durations) == min(done, RESERVOIR)  # a read half-way changes nothing
    smallest = sorted(seen)[:RESERVOIR]
    assert acc.count == spans
    assert sorted(acc.durations) == sorted(d for _, d, _ in smallest)
    assert acc.slowest == sorted(((d, t, s) for s, d, t in seen), reverse=True)[:8]
    assert acc.example_ids() == [(t, s) for s, _, t in smallest[:5]]
    assert acc.errors == len(failed)
    assert acc.example_ids(errors=True) == [(t, s) for s, t, _ in sorted(failed)[:20]]
    assert dict(acc.signatures or {}) == dict(Counter(sig for _, _, sig in failed))


def test_a_snapshot_without_traces_keeps_what_was_learned() -> None:
    """without_traces(): a light copy to pickle; the detector itself keeps its traces."""
    batches = list(Simulator(seed=9).batches(WARMUP))
    detector = Detector()
    _events(detector, batches)
    light = pickle.loads(pickle.dumps(detector.without_traces()))
    assert detector._traces and not light._traces
    assert light.tracked_keys == detector.tracked_keys
    assert light.watermark_ns == detector.watermark_ns
    assert len(pickle.dumps(detector.without_traces())) < len(pickle.dumps(detector)) / 2
