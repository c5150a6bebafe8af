"""The call graph and missing calls: which keys call which, and the usual calls a key's spans
stopped making (a handler that stops short: an exception swallowed, or returned without a
status code)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from statistics import median
from typing import Any

from spanwatch.model import SpanKind

from ._keys import Key
from ._own import OwnBaseline, OwnTimes, abrupt_findings, own_findings, own_time
from ._settings import Settings
from ._stats import EXAMPLES, NO_RUN, CallShares, Family, Finding, KeyStats, WindowAcc, judged
from ._traces import (
    DURATION,
    END,
    ERROR,
    INTERNAL,
    KEY,
    PARENT,
    SPAN_ID,
    WIDTH,
    WINDOW,
    Traces,
    index,
    reach,
)

# a new call's signature (beside the error signatures of its service): what a key's spans now
# call, never called before
CALLS = "calls "
HANDLER_KINDS = frozenset((int(SpanKind.SERVER), int(SpanKind.CONSUMER)))
# INTERNAL spans nested in INTERNAL spans that a handler's calls are looked for through
INNER_DEPTH = 8
_SERVER = int(SpanKind.SERVER)
# handler spans of a window: (their spans that did not fail, how many of those called a child
# of each key), by key
Calls = dict[Key, tuple[int, Counter[Key]]]


def ancestors(parents: dict[Key, set[Key]], keys: set[Key], limit: int = 256) -> set[Key]:
    """Every key that calls one of ``keys``, directly or not (bounded: a walk per finding)."""
    seen: set[Key] = set()
    todo = list(keys)
    while todo and len(seen) < limit:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


class Structure:
    """Learns the call graph (``parents``: each key's callers), each key's usual calls
    (``call_shares``) and own time, and finds the keys whose spans no longer make a usual
    call; ``own`` holds the window's own times (see :mod:`._own`)."""

    def __init__(
        self,
        settings: Settings,
        stats: dict[Key, KeyStats],
        parents: dict[Key, set[Key]],
        call_shares: dict[Key, CallShares],
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.parents = parents
        self.call_shares = call_shares
        self.own_baselines: dict[Key, OwnBaseline] = {}
        self.own: OwnTimes = {}
        self.own_medians: dict[Key, float] = {}  # of the window's own times, once
        # the window's (spans that ended on an answer, spans) of each key judged
        self.abrupt_rates: dict[Key, tuple[int, int]] = {}

    def learn_edges(
        self, traces: list[list[Any]], trace_ids: list[bytes], window: int, structure: bool
    ) -> Calls:
        """Learn the call graph from the window's spans (of the traces ``trace_ids``); with
        ``structure``, also count what the window's handler spans (server, consumer) called:
        for each key, (its spans that did not fail, how many of them have a child of each
        key); and note the own time of those whose calls all succeeded, and how each ended
        (``own``).

        Only handler spans shorter than a window less the lateness are counted: their
        children all ended since the previous window, while the buffer (``structure``) held
        every trace of it, so a missing child is one that was never sent."""
        s = self.settings
        counts: Calls = {}
        own: OwnTimes = {}
        self.own = own
        longest = s.window_ns - int(s.lateness_s * 1e9)
        full = s.max_spans_per_trace * WIDTH  # a trace cut short: not judged
        max_parents = s.max_parent_keys
        # the INTERNAL keys known: a trace without any (most, in most fleets) is read as is
        internal = {key for key in self.stats if key.kind == INTERNAL}
        for flat, trace_id in zip(traces, trace_ids, strict=True):
            if len(flat) == WIDTH:  # one span: no parent within the trace, and no calls
                if structure:
                    _, _, key, error, duration, _, _, at = flat
                    if (
                        at == window
                        and not error
                        and duration <= longest
                        and key.kind in HANDLER_KINDS
                    ):
                        entry = counts.get(key)
                        counts[key] = (entry[0] + 1, entry[1]) if entry else (1, Counter())
                continue
            span_ids = flat[SPAN_ID::WIDTH]
            keys = flat[KEY::WIDTH]
            key_of = dict(zip(span_ids, keys, strict=True))
            windows = flat[WINDOW::WIDTH]
            parents_of = zip(flat[PARENT::WIDTH], keys, windows, strict=True)
            for parent, key, at in parents_of:
                if at == window and parent:
                    parent_key = key_of.get(parent)
                    if parent_key is not None and parent_key != key:
                        parents = self.parents[key]
                        if len(parents) < max_parents:
                            parents.add(parent_key)
            if not structure or len(flat) >= full:
                continue
            handlers = [
                j
                for j, (key, at) in enumerate(zip(keys, windows, strict=True))
                if at == window and key.kind in HANDLER_KINDS
            ]
            if not handlers:
                continue
            errors = flat[ERROR::WIDTH]
            durations = flat[DURATION::WIDTH]
            ends = flat[END::WIDTH]
            mine: dict[bytes, list[int]] = {span_ids[j]: [] for j in handlers}
            parent_ids = flat[PARENT::WIDTH]
            for i, parent in enumerate(parent_ids):
                below = mine.get(parent)
                if below is not None:
                    below.append(i)
            inner = (
                set()
                if internal.isdisjoint(keys)
                else {span_ids[i] for i, key in enumerate(keys) if key.kind == INTERNAL}
            )
            if inner:
                # what an INTERNAL span under a handler made (a controller method's calls) the
                # handler made: its calls, its own time around them (see _traces.reach)
                parent_of = dict(zip(span_ids, parent_ids, strict=True))
                feeds: dict[bytes, list[int]] = {}
                for span_id in inner:
                    up, depth = parent_of[span_id], 0
                    while up in inner and depth < INNER_DEPTH:
                        up, depth = parent_of[up], depth + 1
                    if (target := mine.get(up)) is not None:
                        feeds[span_id] = target
                if feeds:
                    for i, parent in enumerate(parent_ids):
                        if (target := feeds.get(parent)) is not None:
                            target.append(i)
            for j in handlers:
                if errors[j] or durations[j] > longest:
                    continue
                key = keys[j]
                entry = counts.get(key)
                if entry is None:
                    entry = counts[key] = (0, Counter())
                counts[key] = (entry[0] + 1, entry[1])
                below = mine[span_ids[j]]
                if not below:
                    continue
                # the keys it called (an INTERNAL child's too); its calls, for the time
                if len(below) == 1:  # most handlers make one call: no set to make
                    entry[1][keys[below[0]]] += 1
                else:
                    entry[1].update({keys[i] for i in below})
                if inner:
                    below = [i for i in below if keys[i].kind != INTERNAL]
                    if not below:
                        continue
                end = ends[j]
                if len(below) == 1:  # no sort, no union
                    (i,) = below
                    if errors[i]:
                        continue
                    last = i
                    own_ns = durations[j]
                    call_end = ends[i]
                    call_start = call_end - durations[i]
                    if call_end > end:
                        call_end = end
                    if call_start < end - own_ns:
                        call_start = end - own_ns
                    if call_end > call_start:
                        own_ns -= call_end - call_start
                else:
                    if any(errors[i] for i in below):
                        continue
                    calls = [(ends[i] - durations[i], ends[i]) for i in below]
                    own_ns = own_time(end - durations[j], end, calls)
                    last = max(below, key=lambda i: (ends[i], span_ids[i]))
                # its tail: the time from its last call's answer to its end
                own.setdefault(key, []).append(
                    (own_ns, trace_id, span_ids[j], end - ends[last], keys[last])
                )
        return counts

    def findings(
        self,
        calls: Calls,
        accs: dict[Key, WindowAcc],
        traces: Traces,
        trace_ids: Iterable[bytes],
        window: int,
    ) -> tuple[dict[Key, list[Finding]], dict[Key, Key]]:
        """Keys whose spans no longer make a usual call (they stop short): an error finding
        each, for the call missed most; and that call of each."""
        s = self.settings
        out: dict[Key, list[Finding]] = {}
        stopped: dict[Key, Key] = {}
        for key, (n, children) in calls.items():
            shares = self.call_shares.get(key)
            stats = self.stats.get(key)
            if shares is None or stats is None or stats.windows < s.warmup_windows:
                continue
            acc = accs.get(key)
            if acc is not None and acc.errors > s.structure_failed_share * acc.count:
                continue  # mostly failed: the error finding tells it
            floor = max(s.min_error_rate, 1 / (shares.spans + 1))
            worst: tuple[int, float, Key, float] | None = None
            runs, carried = shares.runs or {}, {}
            for child, learned in shares.calls.items():
                share = learned / shares.spans
                if share < s.structure_usual:
                    continue
                q = max(floor, 1 - share)
                # in this window, or over a run of them (a key at a span or two a window)
                lacking = n - children.get(child, 0)
                run, m, rate = judged(runs.get(child, NO_RUN), lacking, n, q, s.min_errors, s)
                if run[2]:
                    carried[child] = run
                if m and (worst is None or (m, -q, child) > (worst[0], -worst[1], worst[2])):
                    worst = (m, q, child, rate)
            shares.runs = carried or None
            if worst is None:
                continue
            m, q, child, rate = worst
            stopped[key] = child
            label, examples = missing_calls(traces, key, child, trace_ids, window)
            out[key] = [
                Finding(
                    Family.ERRORS,
                    "missing_call_rate",
                    rate,
                    q,
                    "ratio",
                    rate / q,
                    m,
                    signature=label,
                    examples=examples,
                )
            ]
        return out, stopped

    def own_findings(self) -> tuple[dict[Key, Finding], dict[Key, Finding]]:
        """The keys whose own time this window is high (see :func:`._own.own_findings`), and
        those whose spans end on an answer more than usual (:func:`._own.abrupt_findings`)."""
        self.own_medians = {key: median(span[0] for span in own) for key, own in self.own.items()}
        s = self.settings
        high = own_findings(self.own, self.own_medians, self.own_baselines, self.stats, s)
        ended, self.abrupt_rates = abrupt_findings(self.own, self.own_baselines, self.stats, s)
        return high, ended

    def learn_calls(self, calls: Calls, findings: dict[Key, list[Finding]]) -> None:
        """Fold the window's calls and own times into each key's usual ones, but for keys
        with findings."""
        s = self.settings
        decay = 1 - s.slow_alpha  # as the error rate
        stats = self.stats
        for key, (n, children) in calls.items():
            # (a key evicted while its spans were in the buffer has no stats: nothing learned)
            if key not in findings and key in stats:
                shares = self.call_shares.get(key)
                if shares is None:
                    shares = self.call_shares[key] = CallShares()
                shares.learn(n, children, decay, s.max_child_keys)
        for key, own in self.own.items():
            if key not in findings and key in stats:
                base = self.own_baselines.get(key)
                if base is None:
                    base = self.own_baselines[key] = OwnBaseline()
                mid = self.own_medians.get(key)
                base.learn(own, median(span[0] for span in own) if mid is None else mid, s)
        # the window's, not kept (nor snapshotted) past it
        self.own, self.own_medians, self.abrupt_rates = {}, {}, {}

    def forget(self, key: Key) -> None:
        self.parents.pop(key, None)
        self.call_shares.pop(key, None)
        self.own_baselines.pop(key, None)


def missing_calls(
    traces: Traces, key: Key, child: Key, trace_ids: Iterable[bytes], window: int
) -> tuple[str, tuple[tuple[bytes, bytes], ...]]:
    """What a call of key ``child`` calls (the server span under it, else the system it
    names, else itself), and (trace id, span id) of up to EXAMPLES of the window's spans of
    ``key`` that did not make it: the smallest span ids, whatever order traces came in."""
    labels: set[str] = set()
    examples: list[tuple[bytes, bytes]] = []
    for trace_id in trace_ids:
        flat = traces.get(trace_id)
        if not flat:
            continue
        keys = flat[KEY::WIDTH]
        if key not in keys and child not in keys:
            continue
        trace = index(flat)
        assert trace is not None  # flat is not empty
        children = trace.children
        for sp in trace.spans:
            if sp.key == child:
                callee = next((c for c in children[sp.span_id] if c.key.kind == _SERVER), None)
                if callee is not None:
                    labels.add(f"{callee.key.service} {callee.key.operation}")
                elif sp.dependency[0]:
                    name, operation = sp.dependency
                    labels.add(operation if name in operation else f"{name} {operation}")
            elif (
                sp.key == key
                and sp.window == window
                and not sp.error
                and all(c.key != child for c in reach(sp.span_id, children))
            ):
                examples.append((sp.span_id, trace_id))
    examples.sort()
    label = min(labels) if labels else f"{child.service} {child.operation}"
    return label, tuple((t, sp) for sp, t in examples[:EXAMPLES])


def calling(
    traces: Traces, key: Key, child: Key, trace_ids: Iterable[bytes], window: int
) -> tuple[tuple[bytes, bytes], ...]:
    """(trace id, span id) of up to EXAMPLES of the window's spans of ``key`` that call a
    child of key ``child``: the smallest span ids, whatever order traces came in."""
    examples: list[tuple[bytes, bytes]] = []
    for trace_id in trace_ids:
        flat = traces.get(trace_id)
        if not flat or child not in flat[KEY::WIDTH]:
            continue
        trace = index(flat)
        assert trace is not None  # flat is not empty
        for sp in trace.spans:
            if (
                sp.key == key
                and sp.window == window
                and any(c.key == child for c in reach(sp.span_id, trace.children))
            ):
                examples.append((sp.span_id, trace_id))
    examples.sort()
    return tuple((t, sp) for sp, t in examples[:EXAMPLES])
