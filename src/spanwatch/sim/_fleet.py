"""Simulated traffic as real fleets send it: sampled, with 4xx answers, with raw paths in names.

Each function rewrites the simulator's batches (or its entry mix) the way a fleet's SDKs and
instrumentations would; none touches the simulator's random generator, so the traffic beneath
is the same as without them. Each trace's spans are all in one batch (the simulator emits a
trace whole, in the batch of its start), which the per-batch rewrites rely on.

- :func:`head_sampled`: the SDK's ``TraceIdRatioBased`` sampler, parent-based: a trace is kept
  or dropped whole, by its trace id.
- :func:`answer_4xx`: a steady share of HTTP lookups answered 404 and of HTTP writes 409, as
  a healthy service answers them (not a fault).
- :func:`raw_paths`: server spans of routes with ids named by the raw path, without
  ``http.route`` (instrumentation without route templates), and their callers' client spans
  named the same way.
- :func:`quiet_entries`: every entry operation but the busiest slowed to a request or two a
  window, so that the keys beneath them see that few.
"""

from __future__ import annotations

from dataclasses import replace

from spanwatch.model import Span, SpanBatch, SpanKind, StatusCode

from ._topology import Entry, Topology

_TRACE_ID_LIMIT = (1 << 64) - 1
# operations whose route has an id are lookups (a missing one is a 404); HTTP writes conflict
LOOKUP_STATUS, LOOKUP_SHARE = 404, 0.03
WRITE_STATUS, WRITE_SHARE = 409, 0.02
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


def sampled(trace_id: bytes, ratio: float) -> bool:
    """The decision of OpenTelemetry's ``TraceIdRatioBased(ratio)``: the trace id's low 64 bits
    below ``ratio`` of their range (opentelemetry-sdk ``sampling.py``)."""
    bound = round(ratio * (_TRACE_ID_LIMIT + 1))
    return int.from_bytes(trace_id, "big") & _TRACE_ID_LIMIT < bound


def head_sampled(batch: SpanBatch, ratio: float = 0.1) -> SpanBatch:
    """The spans of the traces a head sampler at ``ratio`` keeps: whole traces, by trace id
    (every span of a trace shares its root's decision, as ``ParentBased`` propagates it)."""
    keep = {t for t in set(batch.trace_id) if sampled(t, ratio)}
    return SpanBatch.from_spans([s for s in batch.rows() if s.trace_id in keep])


def _answer(span: Span) -> int:
    """The 4xx a healthy server answers ``span`` with, or 0: decided by its span id."""
    if span.kind != SpanKind.SERVER or not span.http_method or span.status_code:
        return 0
    draw = int.from_bytes(span.span_id[4:8], "big") / (1 << 32)
    if "{id}" in span.http_route and draw < LOOKUP_SHARE:
        return LOOKUP_STATUS
    if span.http_method in WRITE_METHODS and draw < WRITE_SHARE:
        return WRITE_STATUS
    return 0


def answer_4xx(batch: SpanBatch) -> SpanBatch:
    """The batch with a steady share of HTTP requests answered 4xx: a lookup by id 404 (3%),
    a POST, PUT or PATCH 409 (2%), of those that did not fail already.

    The server span keeps status UNSET with the 4xx code, as server instrumentations leave a
    4xx (it is the client's error); the caller's client span is ERROR with the code and no
    status message or exception, as the ``requests`` instrumentation marks any answer of 400
    or more. The caller handles the answer and goes on: nothing else in the trace changes."""
    rows = batch.rows()
    codes = {s.span_id: code for s in rows if (code := _answer(s))}
    if not codes:
        return batch
    # the simulator gives a server span its caller's client span as parent
    callers = {s.parent_span_id: codes[s.span_id] for s in rows if s.span_id in codes}
    out = []
    for s in rows:
        if s.kind == SpanKind.SERVER and s.span_id in codes:
            s = replace(s, http_status_code=codes[s.span_id])
        elif s.kind == SpanKind.CLIENT and s.span_id in callers:
            s = replace(
                s,
                status_code=int(StatusCode.ERROR),
                status_message="",
                exception_type="",
                exception_message="",
                http_status_code=callers[s.span_id],
            )
        out.append(s)
    return SpanBatch.from_spans(out)


def raw_paths(batch: SpanBatch) -> SpanBatch:
    """The batch as instrumentation without route templates sends it: a server span whose
    route has an id is named ``METHOD /raw/path/8123`` with that path in ``url.path`` and no
    ``http.route``; the client span that called it is named the same."""
    rows = batch.rows()
    named = {
        s.parent_span_id: s.name
        for s in rows
        if s.kind == SpanKind.SERVER and "{id}" in s.http_route and s.parent_span_id
    }
    out = []
    for s in rows:
        if s.kind == SpanKind.SERVER and "{id}" in s.http_route:
            path = s.name.partition(" ")[2]
            s = replace(s, http_route="", url_path=path)
        elif s.kind == SpanKind.CLIENT and s.span_id in named:
            s = replace(s, name=named[s.span_id])
        out.append(s)
    return SpanBatch.from_spans(out)


def quiet_entries(
    topology: Topology, rate: float, per_window: float = 1.5, window_s: float = 10.0
) -> tuple[list[Entry], float]:
    """(entries, rate) under which every entry operation but the busiest runs at ``per_window``
    requests a window at the day's mean rate (none is raised), the busiest as it was."""
    total = sum(e.weight for e in topology.entries)
    busiest = max(topology.entries, key=lambda e: e.weight)
    per_s = [
        rate * e.weight / total
        if e is busiest
        else min(rate * e.weight / total, per_window / window_s)
        for e in topology.entries
    ]
    entries = [replace(e, weight=r) for e, r in zip(topology.entries, per_s, strict=True)]
    return entries, sum(per_s)
