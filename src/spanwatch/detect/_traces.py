"""The recent-trace buffer: the last minute or so of traces, kept for root cause and structure.

A trace is one flat list, WIDTH values a span in TraceSpan's order (a tuple for each span would
be one more object to make, and for the cycle collector to visit, per span). ``read`` gives
one trace's spans with the two views every walk over it needs: span by id, children by parent.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, NamedTuple

from spanwatch.model import SpanKind

from . import _filing as filing
from ._keys import Key

INTERNAL = int(SpanKind.INTERNAL)

Traces = OrderedDict[bytes, list[Any]]  # trace id -> its spans, flat, oldest trace first


# a failed client span's ``error`` when it carries an HTTP error status: the callee answered
# (4xx, 5xx), whatever its own span says; True otherwise
ANSWERED = 2


class TraceSpan(NamedTuple):
    span_id: bytes
    parent: bytes
    key: Key
    error: bool | int  # False, True, or ANSWERED
    duration: int
    dependency: tuple[str, str]  # (name, operation) for calls to uninstrumented systems
    end: int  # its end, in event time (ns)
    window: int


# NamedTuple's own constructor is Python code; this one is not, and takes a plain tuple.
make_span = partial(tuple.__new__, TraceSpan)
WIDTH = len(TraceSpan._fields)
SPAN_ID, PARENT, KEY, WINDOW = 0, 1, 2, WIDTH - 1
ERROR, DURATION, END = 3, 4, 6
assert TraceSpan._fields.index("window") == WINDOW
assert TraceSpan._fields.index("duration") == DURATION
assert TraceSpan._fields.index("end") == END


def spans(flat: list[Any] | None) -> list[TraceSpan]:
    """A stored trace's spans."""
    return list(map(make_span, zip(*[iter(flat or ())] * WIDTH, strict=True)))


class Trace(NamedTuple):
    spans: list[TraceSpan]
    by_id: dict[bytes, TraceSpan]
    children: defaultdict[bytes, list[TraceSpan]]  # by parent span id, in span order


def reach(span_id: bytes, children: dict[bytes, list[TraceSpan]]) -> list[TraceSpan]:
    """What a span made: its children, and those of each INTERNAL child in turn (a controller
    method, a function traced in-process: the span's own work, with its calls under it)."""
    out: list[TraceSpan] = []
    seen = {span_id}  # a span id twice, or a parent link that loops, is read once
    stack = list(children.get(span_id, ()))
    while stack:
        child = stack.pop()
        out.append(child)
        if child.key.kind == INTERNAL and child.span_id not in seen:
            seen.add(child.span_id)
            stack.extend(children.get(child.span_id, ()))
    return out


def calls_of(span_id: bytes, children: dict[bytes, list[TraceSpan]]) -> list[TraceSpan]:
    """The calls a span made (:func:`reach`, less the INTERNAL spans: their time is its own)."""
    return [c for c in reach(span_id, children) if c.key.kind != INTERNAL]


def read(traces: Traces, trace_id: bytes) -> Trace | None:
    """One kept trace, indexed; None when it is not kept (or empty)."""
    return index(traces.get(trace_id))


def example_spans(
    traces: Traces, examples: Iterable[tuple[bytes, bytes]]
) -> Iterator[tuple[Trace, TraceSpan]]:
    """Each example (trace id, span id) still kept: its trace, indexed, and the span."""
    for trace_id, span_id in examples:
        trace = read(traces, trace_id)
        span = trace.by_id.get(span_id) if trace is not None else None
        if trace is not None and span is not None:
            yield trace, span


def index(flat: list[Any] | None) -> Trace | None:
    """A stored trace's spans, by id and by parent; None when it has none."""
    found = spans(flat)
    if not found:
        return None
    children: defaultdict[bytes, list[TraceSpan]] = defaultdict(list)
    for sp in found:
        children[sp.parent].append(sp)
    return Trace(found, {sp.span_id: sp for sp in found}, children)


def keep(
    traces: Traces,
    window_traces: dict[int, dict[bytes, None]],
    trace_ids: list[bytes],
    columns: tuple[list[Any], ...],
    max_traces: int,
    max_spans: int,
) -> None:
    """Add spans (columns of their TraceSpan fields) to the recent traces: max_traces of them,
    the oldest going first, each with its first max_spans spans."""
    filing.keep_traces(traces, trace_ids, columns, max_traces, max_spans * WIDTH)
    for window, touched in window_traces.items():
        # bounded like the traces themselves, with room for those evicted since the cut
        if len(touched) > WINDOW_TRACES_SLACK * max_traces:
            window_traces[window] = {t: None for t in touched if t in traces}


# a window's list of the traces it touched is cut back to the kept ones past this many times
# max_traces: cutting it at every batch would cost a pass over it each time
WINDOW_TRACES_SLACK = 2


def expire(traces: Traces, window: int, trace_windows: int) -> None:
    """Drop the traces whose latest span is trace_windows windows older than ``window``."""
    horizon = window - trace_windows
    while traces:
        flat = next(iter(traces.values()))
        if flat and flat[-1] > horizon:  # the window of its latest span
            break
        traces.popitem(last=False)
