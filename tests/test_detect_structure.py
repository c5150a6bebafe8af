"""Structure as a signal: handlers that stop short, found without any status code."""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from spanwatch.cli._eval import _without_status
from spanwatch.detect import Detector, Settings
from spanwatch.model import Pattern, Span, SpanBatch, SpanKind
from spanwatch.sim import NS, Fault, Simulator, chain

WARMUP = 600.0
FAULT = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", WARMUP, 240, 0.4)


def _events(detector: Detector, batches: Iterable[SpanBatch]) -> list[dict[str, Any]]:
    out = []
    for batch in batches:
        out += [{"type": e.type, **e.fields["incident"]} for e in detector.process(batch)]
    return out


def _stripped(sim: Simulator, seconds: float, tick_s: float = 1.0) -> list[SpanBatch]:
    return [_without_status(b) for b in sim.batches(seconds, tick_s=tick_s)]


@functools.cache
def _faulty() -> tuple[SpanBatch, ...]:
    return tuple(_stripped(Simulator(seed=11, faults=(FAULT,)), WARMUP + 360))


def test_a_fault_without_status_codes_is_an_error_burst_at_its_root() -> None:
    """A handler that fails and stops short, with no status recorded anywhere: an error burst
    at that handler, told by the call its spans no longer make."""
    events = _events(Detector(), _faulty())
    opened = [e for e in events if e["type"] == "incident.opened"]
    assert len(opened) == 1, opened
    (incident,) = opened
    assert incident["pattern"] == "error_burst"
    assert incident["root_cause"] == {"service": "payments", "operation": "POST /v1/charges"}
    assert incident["evidence"]["metric"] == "missing_call_rate"
    assert 0.2 < incident["evidence"]["observed"] <= 1.0
    assert "no longer call" in incident["summary"] and "(usually 100% do)" in incident["summary"]
    assert incident["trace_ids"]
    start = Simulator().start_ns + int(WARMUP * NS)
    assert _ns(incident["detected_at"]) <= start + 60 * NS


def test_healthy_traffic_with_optional_calls_raises_nothing() -> None:
    """Calls made on some requests only (the topology's optional calls) and rare failures
    that stop short are ordinary: a compressed day without status codes raises nothing."""
    for seed in (21, 22):
        sim = Simulator(seed=seed, day_s=1800)
        assert _events(Detector(), _stripped(sim, 1800)) == []


def test_a_churning_trace_buffer_judges_no_structure() -> None:
    """With a buffer far too small for a window's traces (a trace may be evicted before it
    completes, and made again without its earlier children), structure is neither judged nor
    learned: the same fault finds nothing."""
    detector = Detector(Settings(max_traces=50))
    assert _events(detector, _faulty()) == []
    assert not detector._call_shares


def test_the_same_spans_give_the_same_structure_findings_however_batched() -> None:
    """0.25 s, 1 s or 30 s batches, shuffled within each: the same events."""
    sim = Simulator(seed=4, faults=(FAULT,))
    base = _stripped(sim, WARMUP + 300, tick_s=0.25)
    end = sim.start_ns + int((WARMUP + 300) * NS)
    results = []
    for ticks in (1, 4, 120):
        rng = random.Random(ticks)
        batches = []
        for i in range(0, len(base), ticks):
            rows = [row for batch in base[i : i + ticks] for row in batch.rows()]
            rng.shuffle(rows)
            batches.append(SpanBatch.from_spans(rows))
        detector = Detector()
        events = _events(detector, batches)
        events += [{"type": e.type, **e.fields["incident"]} for e in detector.advance(end + NS)]
        results.append(
            [(e["type"], e["id"], e["summary"], e["detected_at"], e["trace_ids"]) for e in events]
        )
    assert results[0] and results[0] == results[1] == results[2]
    assert "no longer call" in results[0][0][2]


def _ns(stamp: str) -> int:
    from spanwatch.cli._eval import _parse_ns

    return _parse_ns(stamp)


def _with_error_pages(
    batches: Iterable[SpanBatch], service: str, share: float, from_ns: int
) -> Iterator[SpanBatch]:
    """``share`` of ``service``'s server spans that start from ``from_ns`` on forward to an
    error controller (a child span of a name never seen below them), as a framework that
    turns an exception into an error page does; chosen by span id."""
    for batch in batches:
        rows = batch.rows()
        extra: list[Span] = []
        for span in rows:
            if (
                span.service == service
                and span.kind == SpanKind.SERVER
                and span.start_ns >= from_ns
                and hashlib.sha1(span.span_id).digest()[0] < share * 256
            ):
                extra.append(
                    replace(
                        span,
                        span_id=hashlib.sha1(b"page" + span.span_id).digest()[:8],
                        parent_span_id=span.span_id,
                        name="BasicErrorController.error",
                        kind=int(SpanKind.INTERNAL),
                        start_ns=span.end_ns - (span.end_ns - span.start_ns) // 4,
                        http_route="",
                        http_method="",
                        http_status_code=0,
                    )
                )
        yield SpanBatch.from_spans(rows + extra)


def test_a_new_span_name_below_an_operation_is_a_new_error_at_it() -> None:
    """No status codes anywhere; from the fault on, 3% of one operation's spans forward to an
    error controller never seen below it: a new_error at that operation within a few
    minutes, one incident, told by the new call. The same calls from the start are its
    ordinary shape and raise nothing."""
    sim = Simulator(seed=12)
    start = sim.start_ns + int(WARMUP * NS)
    events = _events(
        Detector(), _with_error_pages(_stripped(sim, WARMUP + 300), "cart", 0.03, start)
    )
    opened = [e for e in events if e["type"] == "incident.opened"]
    assert len(opened) == 1, opened
    (incident,) = opened
    assert incident["pattern"] == "new_error"
    assert incident["root_cause"] == {"service": "cart", "operation": "GET /api/cart/{id}"}
    assert incident["evidence"]["metric"] == "new_call_count"
    assert "now call BasicErrorController.error" in incident["summary"]
    assert incident["trace_ids"]
    assert start < _ns(incident["detected_at"]) <= start + 180 * NS
    always = _with_error_pages(_stripped(Simulator(seed=12), WARMUP + 300), "cart", 0.03, 0)
    assert _events(Detector(), always) == []


def test_a_wrong_result_without_status_codes_is_blamed_on_its_answerer() -> None:
    """No status codes: checkout stops short as inventory's wrong answers arrive (it makes
    none of its later calls); the incident is rooted at inventory, told as its answers."""
    fault = Fault(Pattern.NEW_ERROR, "inventory", "/Inventory/Reserve", WARMUP, 240, 0.4, "answer")
    events = _events(Detector(), _stripped(Simulator(seed=11, faults=(fault,)), WARMUP + 360))
    opened = [e for e in events if e["type"] == "incident.opened"]
    assert len(opened) == 1, opened
    (incident,) = opened
    assert incident["root_cause"] == {"service": "inventory", "operation": "/Inventory/Reserve"}
    # checkout ends as each wrong answer comes, and makes none of its later calls: both tell
    # it, the first is a new error's evidence
    assert incident["pattern"] == "new_error"
    assert incident["evidence"]["metric"] == "abrupt_end_rate"
    assert "the answers of inventory" in incident["summary"]


def test_a_wrong_result_read_last_without_status_codes_is_told_by_how_its_callers_end() -> None:
    """No status codes, and tax's wrong answers come last in pricing's spans (on most of them
    it calls nothing after): pricing makes no call fewer, only ends as each answer comes,
    where it does its own work after it. A new error of tax's answers, within a minute."""
    fault = Fault(Pattern.NEW_ERROR, "tax", "/Tax/Compute", WARMUP, 240, 0.4, "answer")
    sim = Simulator(chain(), seed=3, faults=(fault,))
    events = _events(Detector(), _stripped(sim, WARMUP + 360))
    opened = [e for e in events if e["type"] == "incident.opened"]
    assert len(opened) == 1, opened
    (incident,) = opened
    assert incident["pattern"] == "new_error"
    assert incident["root_cause"] == {"service": "tax", "operation": "/Tax/Compute"}
    assert incident["evidence"]["metric"] == "abrupt_end_rate"
    assert 0.2 < incident["evidence"]["observed"] <= 1.0
    assert "the answers of tax" in incident["summary"]
    start = sim.start_ns + int(WARMUP * NS)
    assert start < _ns(incident["detected_at"]) <= start + 60 * NS
    resolved = [e for e in events if e["type"] == "incident.resolved"]
    assert [e["id"] for e in resolved] == [incident["id"]]  # and it ends with the fault


def test_handlers_that_always_end_on_an_answer_raise_nothing() -> None:
    """Handlers whose own work comes before their calls (each ends as its call answers) have
    learned so: a proxy's spans all ending on an answer is no new error."""
    rows = _stripped(Simulator(chain(), seed=4, day_s=1800), 1800)
    events = _events(Detector(), [_work_first(batch) for batch in rows])
    assert events == _events(Detector(), rows)  # nothing the traffic as it was did not raise
    assert not [e for e in events if e["evidence"]["metric"] == "abrupt_end_rate"]


def _work_first(batch: SpanBatch) -> SpanBatch:
    """The batch with every handler span ending as its last call ends (its own time moved
    before its calls)."""
    spans = batch.rows()
    last_end: dict[bytes, int] = {}
    for span in spans:
        if span.parent_span_id:
            last_end[span.parent_span_id] = max(last_end.get(span.parent_span_id, 0), span.end_ns)
    return SpanBatch.from_spans(
        [
            replace(span, end_ns=last_end[span.span_id])
            if span.kind == SpanKind.SERVER and span.span_id in last_end
            else span
            for span in spans
        ]
    )


def test_a_retry_storm_without_status_codes_is_the_retried_callees() -> None:
    """No status codes: pricing calls tax again and again, and no span says a call failed.
    The retried calls lead to their callee: one retry storm, at tax, and not told as the
    network in front of it (nothing says the time went there)."""
    fault = Fault(Pattern.RETRY_STORM, "tax", "/Tax/Compute", WARMUP, 300, 5.0)
    events = _events(
        Detector(), _stripped(Simulator(chain(), seed=1, faults=(fault,)), WARMUP + 400)
    )
    opened = [e for e in events if e["type"] == "incident.opened"]
    assert len(opened) == 1, opened
    (incident,) = opened
    assert incident["pattern"] == "retry_storm"
    assert incident["root_cause"] == {"service": "tax", "operation": "/Tax/Compute"}
    assert "calls into" not in incident["summary"]
