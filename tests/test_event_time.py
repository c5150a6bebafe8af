"""Event time on a fleet of clocks: wrong clocks, lagging sources, time that starts over, and
service identity from the resource. The detector alone, on simulated traffic."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from dataclasses import replace

from spanwatch.detect import Detector
from spanwatch.model import Event, Pattern, Span, SpanBatch, make_scope
from spanwatch.sim import NS, Fault, Simulator

WARMUP = 600.0
FAULT = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP, 240, 0.5)
YEAR = 365 * 86_400 * NS


def _batches(seed: int = 5, seconds: float = WARMUP + 420, **kw: object) -> list[SpanBatch]:
    return list(Simulator(seed=seed, faults=(FAULT,), **kw).batches(seconds))  # type: ignore[arg-type]


def _opened(events: Iterable[Event]) -> list[tuple[str, str, str, str]]:
    return [
        (
            e.fields["incident"]["pattern"],
            e.fields["incident"]["root_cause"]["service"],
            e.fields["incident"]["root_cause"]["operation"],
            e.fields["incident"]["detected_at"],
        )
        for e in events
        if e.type == "incident.opened"
    ]


def _run(detector: Detector, batches: Iterable[SpanBatch]) -> list[Event]:
    events: list[Event] = []
    for batch in batches:
        events += detector.process(batch)
    return events


def _shifted(span: Span, ns: int) -> Span:
    return replace(span, start_ns=span.start_ns + ns, end_ns=span.end_ns + ns)


def _with_broken_span(batches: list[SpanBatch], at: int, skew_ns: int) -> list[SpanBatch]:
    """The batches, with one extra span stamped ``skew_ns`` off, alone in its own request (as
    a browser or a misconfigured host sends it), before batch ``at``."""
    span = _shifted(batches[at].row(0), skew_ns)
    span = replace(span, span_id=b"\xee" * 8, trace_id=b"\xee" * 16, source="browser\x1f\x1fb-1")
    return [*batches[:at], SpanBatch.from_spans([span]), *batches[at:]]


def test_one_span_a_year_ahead_changes_nothing() -> None:
    batches = _batches()
    expected = _opened(_run(Detector(), batches))
    assert [o[:3] for o in expected] == [("error_burst", "payments", "POST /v1/charges")]
    detector = Detector()
    got = _opened(_run(detector, _with_broken_span(batches, 100, YEAR)))
    assert got == expected
    assert detector.late_spans == 0
    service = batches[100].service[0]
    assert detector.clock.corrected == {(service, "ahead"): 1}


def test_one_span_minutes_ahead_or_a_year_behind_changes_nothing() -> None:
    batches = _batches()
    expected = _opened(_run(Detector(), batches))
    for at, skew in ((700, 5 * 60 * NS), (650, -YEAR)):
        detector = Detector()
        notes = []
        events: list[Event] = []
        for batch in _with_broken_span(batches, at, skew):
            events += detector.process(batch)
            notes += detector.drain_notes()
        assert _opened(events) == expected, skew
        assert detector.late_spans == 0
        (note,) = notes
        assert note.kind == ("ahead" if skew > 0 else "behind")
        assert note.source == "browser\x1f\x1fb-1"
        assert abs(note.skew_ns - skew) < 2 * NS


def _skew_service(batches: list[SpanBatch], service: str, ns: int) -> Iterator[SpanBatch]:
    """The batches, with every span of one service stamped ``ns`` off (its host's clock)."""
    for batch in batches:
        yield SpanBatch.from_spans(
            [_shifted(s, ns) if s.service == service else s for s in batch.rows()]
        )


def test_a_whole_source_minutes_off_is_corrected_and_still_judged() -> None:
    """A service whose host clock is five minutes behind (or ahead): its own fault is still
    found at its root cause, no false traffic drop opens, nothing is lost."""
    batches = _batches()
    for skew in (-5 * 60 * NS, 5 * 60 * NS):
        detector = Detector()
        opened = _opened(_run(detector, _skew_service(batches, "payments", skew)))
        assert [o[:3] for o in opened] == [("error_burst", "payments", "POST /v1/charges")], skew
        assert detector.late_spans == 0
        direction = "behind" if skew < 0 else "ahead"
        payments = sum(b.service.count("payments") for b in batches)
        assert detector.clock.corrected == {("payments", direction): payments}


def _lagging(batches: list[SpanBatch], service: str, lag_ticks: int) -> Iterator[SpanBatch]:
    """One service's spans come through a collector ``lag_ticks`` batches behind the rest,
    with their own (true) timestamps."""
    delayed: list[list[Span]] = []
    for batch in batches:
        rows = batch.rows()
        delayed.append([s for s in rows if s.service == service])
        late = delayed.pop(0) if len(delayed) > lag_ticks else []
        yield SpanBatch.from_spans([s for s in rows if s.service != service] + late)


def test_a_source_a_minute_behind_is_waited_for() -> None:
    """Its fault is found with the right pattern and root cause (later, by its lag), with no
    false traffic drop; only the spans it sent before it was seen lagging come too late."""
    batches = _batches()
    expected = _opened(_run(Detector(), batches))
    for lag in (30, 60):
        detector = Detector()
        got = _opened(_run(detector, _lagging(batches, "payments", lag)))
        assert [o[:3] for o in got] == [o[:3] for o in expected], lag
        # the transition into lagging, once at the start: under two lags' worth of its spans
        payments_per_s = sum(b.service.count("payments") for b in batches) / len(batches)
        assert detector.late_spans < 2 * lag * payments_per_s
        assert detector.late["payments"] == detector.late_spans
        assert "payments\x1f\x1fpayments-1" in detector.clock.lagging or lag == 0


def _found(events: Iterable[Event]) -> list[tuple[str, str, str]]:
    return sorted({o[:3] for o in _opened(events)})


def test_traffic_older_than_the_detector_has_seen_starts_a_new_epoch() -> None:
    """The same simulation twice into one detector (a second `make demo`), and a restored
    snapshot fed older traffic: the second run's fault is found as on a fresh detector."""
    batches = _batches()
    fresh = _found(_run(Detector(), batches))
    detector = Detector()
    _run(detector, batches)
    assert _found(_run(detector, batches)) == fresh
    assert detector.clock.epochs == 1
    assert detector.late_spans == 0
    restored = pickle.loads(pickle.dumps(detector.without_traces()))
    assert _found(_run(restored, _batches(seed=7))) == _found(_run(Detector(), _batches(seed=7)))
    assert restored.clock.epochs == 2
    assert restored.late_spans == 0


def _merged(*runs: list[SpanBatch]) -> Iterator[SpanBatch]:
    for batches in zip(*runs, strict=True):
        yield SpanBatch.from_spans([s for b in batches for s in b.rows()])


def test_two_environments_of_the_same_services_keep_apart() -> None:
    """Staging and prod run the same services; only prod has the fault: one incident, in prod."""
    prod = _batches(seed=8, scope=make_scope(["shop", "prod"]))
    staging = list(Simulator(seed=9, scope=make_scope(["shop", "staging"])).batches(WARMUP + 420))
    events = _run(Detector(), _merged(prod, staging))
    opened = [e.fields["incident"] for e in events if e.type == "incident.opened"]
    assert [(i["pattern"], i["root_cause"]["service"]) for i in opened] == [
        ("error_burst", "payments")
    ]
    (incident,) = opened
    assert incident["environment"] == "prod"
    assert incident["namespace"] == "shop"
    assert incident["resource"] == {
        "service.namespace": "shop",
        "deployment.environment.name": "prod",
    }


def _rebatched(batches: list[SpanBatch], seconds: int) -> list[SpanBatch]:
    """The same spans in batches of ``seconds`` of event time each."""
    return [
        SpanBatch.from_spans([s for b in batches[i : i + seconds] for s in b.rows()])
        for i in range(0, len(batches), seconds)
    ]


def test_long_batches_are_on_the_clock() -> None:
    """The same traffic in batches of 1 s, 70 s or 4 minutes of event time each (a fast
    replay): nothing is corrected, nothing is late, no epoch, the same incidents."""
    batches = _batches(seconds=WARMUP + 360)
    expected = _found(_run(Detector(), batches))
    for seconds in (70, 240):
        detector = Detector()
        assert _found(_run(detector, _rebatched(batches, seconds))) == expected, seconds
        assert not detector.clock.corrected
        assert detector.late_spans == 0
        assert detector.clock.epochs == 0


def test_new_sources_a_little_ahead_do_not_drag_the_fleet() -> None:
    """Lone spans from three new sources, 55, 110 and 165 s ahead, one after another: the
    fleet's time stays with the fleet, nothing is held, late or forgotten."""
    batches = _batches(seconds=WARMUP + 360)
    expected = _opened(_run(Detector(), batches))
    fleet = list(batches)
    for n, skew in enumerate((55, 110, 165)):
        span = replace(_shifted(batches[400].row(n), skew * NS), source=f"browser-{n}")
        fleet.insert(401 + n, SpanBatch.from_spans([replace(span, span_id=bytes([n + 1]) * 8)]))
    detector = Detector()
    assert _opened(_run(detector, fleet)) == expected
    assert detector.clock.epochs == 0
    assert detector.late_spans == 0
    assert detector.clock.held_spans == 0


def test_one_wrong_clock_alone_never_starts_an_epoch() -> None:
    """One source an hour ahead sends two batches 25 s apart back to back: it is corrected
    when the fleet's next batch comes; time does not move for everyone."""
    batches = _batches(seconds=WARMUP + 360)
    expected = _opened(_run(Detector(), batches))
    wrong = [
        SpanBatch.from_spans(
            [replace(_shifted(s, 3600 * NS), source="wrong\x1f\x1fw-1") for s in b.rows()[:20]]
        )
        for b in (batches[500], batches[525])
    ]
    detector = Detector()
    got = _opened(_run(detector, [*batches[:501], *wrong, *batches[501:]]))
    assert got == expected
    assert detector.clock.epochs == 0
    assert sum(detector.clock.corrected.values()) == 40
    assert {direction for _, direction in detector.clock.corrected} == {"ahead"}


def test_held_batches_are_judged_when_time_moves_on_without_them() -> None:
    """Off-clock batches that come last, with nothing on time after them, are not kept
    forever: once event time has moved on they are judged as wrong clocks."""
    batches = _batches(seconds=WARMUP)
    detector = Detector()
    _run(detector, batches)
    lone = SpanBatch.from_spans([_shifted(batches[-1].row(0), YEAR)])
    detector.process(lone)
    assert detector.clock.held_spans == 1
    detector.advance(detector.watermark_ns + 40 * NS)
    assert detector.clock.held_spans == 0
    assert sum(detector.clock.corrected.values()) == 1
