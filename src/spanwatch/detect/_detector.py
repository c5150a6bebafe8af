"""The detector: span batches and watermarks in, incident events out. No I/O, no clock.

``process(batch)`` files every span into its key's event-time window and closes the windows
that the watermark (the latest span end, minus the allowed lateness) has passed;
``advance(watermark)`` closes windows when no spans arrive. Closing a window judges every key
against its baseline, finds each anomaly's root cause in the recent traces, groups anomalies
that share a root cause into one incident, and opens, updates or resolves incidents.
"""

from __future__ import annotations

import copy
import hashlib
from bisect import bisect_left
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import eq
from typing import Any

from spanwatch.model import (
    Deploy,
    Event,
    EventType,
    Evidence,
    Incident,
    Operation,
    PathStep,
    Pattern,
    SeriesPoint,
    Severity,
    SpanBatch,
    SpanKind,
    StatusCode,
    split_scope,
)

from . import _filing as filing
from ._calls import CLIENT_KINDS, CallDescriber
from ._clock import BACKWARD, ClockNote, EventClock
from ._filing import take
from ._keys import CallNames, Key, KeyTable, template
from ._settings import Settings
from ._stats import CallShares, Family, Finding, KeyStats, WindowAcc, chernoff_upper, median
from ._traces import (
    DURATION,
    ERROR,
    KEY,
    PARENT,
    SPAN_ID,
    WIDTH,
    WINDOW,
    Traces,
    TraceSpan,
    expire,
    index,
    keep,
    read,
)

# Plain ints for the per-span loop (enum comparisons cost more than the rest of its work).
_CLIENT, _SERVER = int(SpanKind.CLIENT), int(SpanKind.SERVER)
_ERROR = int(StatusCode.ERROR)
_HANDLER_KINDS = frozenset((int(SpanKind.SERVER), int(SpanKind.CONSUMER)))
_HEALTH_RPC = "grpc.health.v1.Health"


# An open incident's evidence follows its root cause every window (its value now: over the
# last UPDATEWINDOWS windows); an update goes out when that moves by 30% (of itself or its
# baseline) or the share affected by 0.2, at most every UPDATEWINDOWS windows (severity and
# blast radius changes go at once).
SERIES_POINTS = 30
UPDATEWINDOWS = 3
_MOVED = 0.3
_SHARE_MOVED = 0.2
_DEPLOY_HORIZON_NS = 30 * 60 * 1_000_000_000  # deploys this long before an incident matter
# Lower is more specific: an open incident takes a more specific pattern when evidence for it
# arrives (e.g. errors first, then the retries behind them).
_SPECIFICITY = {
    Pattern.RETRY_STORM: 0,
    Pattern.CASCADING_FAILURE: 1,
    Pattern.SLOW_DEPENDENCY: 1,
    Pattern.NEW_ERROR: 2,
    Pattern.LATENCY_SPIKE: 3,
    Pattern.LATENCY_DRIFT: 3,
    Pattern.ERROR_BURST: 4,
    Pattern.TRAFFIC_DROP: 5,
}
_PRIORITY = {
    Pattern.ERROR_BURST: 0,
    Pattern.LATENCY_SPIKE: 0,
    Pattern.TRAFFIC_DROP: 0,
    Pattern.CASCADING_FAILURE: 0,
    Pattern.SLOW_DEPENDENCY: 1,
    Pattern.NEW_ERROR: 1,
    Pattern.RETRY_STORM: 1,
    Pattern.LATENCY_DRIFT: 2,
}


@dataclass(slots=True)
class _Group:
    root: Operation
    is_dependency: bool
    findings: list[tuple[Key, Finding]] = field(default_factory=list)
    cascading: bool = False
    # the calls into the root were slow or failed while its own spans were not: the trouble
    # is in front of it (network, ingress, a proxy), on the edge from its callers
    edge: bool = False
    dependency_ops: Counter[str] = field(default_factory=Counter)
    trace_ids: list[bytes] = field(default_factory=list)
    example_span: bytes = b""


@dataclass(slots=True)
class _Open:
    incident: Incident
    keys: set[Key]
    last_window: int
    lead: Key  # whose spans the evidence measures, window by window
    finding: Finding  # the lead finding: what the summary says, redone as the evidence moves
    edge: bool = False  # the summary's: the trouble is in front of the root
    counted: int = 0  # a new error's spans since the incident opened
    series: deque[SeriesPoint] = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))
    shown: tuple[float, float] = (0.0, 0.0)  # (observed, share) as last published
    # (value, share, spans) of the last UPDATEWINDOWS windows measured: "now" is their
    # weighted mean, steadier than one window of a key at a few spans a window
    recent: deque[tuple[float, float, int]] = field(
        default_factory=lambda: deque(maxlen=UPDATEWINDOWS)
    )
    shown_window: int = 0
    healthy: int = 0  # windows since its last evidence in which its lead key's spans came


class Detector:
    """Deterministic and picklable: the same input gives the same events, and a pickled
    detector resumes exactly where it stopped."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = s = settings or Settings()
        self._w = s.window_ns
        self._keys = KeyTable(s.max_keys)
        self._describer = CallDescriber(CallNames(), self._keys)
        self._probe_paths = frozenset(s.probe_paths)
        self._stats: dict[Key, KeyStats] = {}
        self._windows: dict[int, dict[Key, WindowAcc]] = {}
        self._closed = -1  # index of the last closed window; -1 before the first span
        self.watermark_ns = 0
        self._traces: Traces = OrderedDict()
        # the traces each open window has spans of, in the order they first did
        self._window_traces: dict[int, dict[bytes, None]] = {}
        self._parents: dict[Key, set[Key]] = defaultdict(set)
        # (service, scope) -> error signatures known for it
        self._known_errors: dict[tuple[str, str], set[str]] = defaultdict(set)
        # (service, scope, signature) -> window it first appeared in
        # (first window, occurrences since, the rate it may have had unseen)
        self._new_errors: dict[tuple[str, str, str], tuple[int, int, float]] = {}
        self._retry_ewma: dict[Key, float] = {}
        # key -> the share of its spans that call each child key (its usual calls)
        self._call_shares: dict[Key, CallShares] = {}
        self._windows_closed = 0
        self._open: dict[Operation, _Open] = {}
        self.late_spans = 0
        self.probe_spans = 0  # health checks and unmatched routes, left out of baselines
        self.late: Counter[str] = Counter()  # late spans by service
        self.dropped_keys = 0
        self._versions: dict[tuple[str, str], str] = {}  # (service, scope) -> version
        self._deploys: deque[tuple[str, Deploy]] = deque(maxlen=256)  # (scope, deploy)
        self.clock = EventClock(
            max_lag_ns=int(s.max_lag_s * 1e9),
            max_ahead_ns=int(s.max_ahead_s * 1e9),
            lateness_ns=int(s.lateness_s * 1e9),
            epoch_after_ns=int(s.epoch_after_s * 1e9),
            live_ns=int(s.source_live_s * 1e9),
        )

    # -- input -----------------------------------------------------------------------------

    def process(
        self, batch: SpanBatch, on_events: Callable[[list[Event]], None] | None = None
    ) -> list[Event]:
        """File a batch of spans; returns the events of the windows it closed.

        The event clock (``_clock.EventClock``) first decides what of it is on the fleet's
        clock: spans of a wrong clock are moved onto it, a batch of older or much newer
        traffic may be held back until it is clear whether time has started over (a new
        epoch: what was open resolves, baselines stay).
        """
        events: list[Event] = []
        admitted = self.clock.admit(batch)
        for item in admitted:
            if item.epoch:
                started = self._new_epoch(forget=item.epoch == BACKWARD)
                if on_events is not None:
                    on_events(started)
                else:
                    events += started
            events += self._file_batch(item.batch, on_events)
        if not admitted:
            events += self._close_until(self.watermark_ns)
        return events

    def _file_batch(
        self, batch: SpanBatch, on_events: Callable[[list[Event]], None] | None = None
    ) -> list[Event]:
        """File a batch that is on the fleet's clock.

        Spans are taken in end-time order and a window closes as soon as the watermark passes
        it, so the same spans give the same events however they are batched. With
        ``on_events``, the events of a window that closes part-way through the batch are
        handed to it at once (and not returned), instead of after the rest of the batch.

        The spans between two window closes are filed column by column (a batch holds a few
        keys, and a window's spans of one key go into its record together), which costs a
        fraction of filing them one at a time and gives the same state.
        """
        w = self._w
        lateness = int(self.settings.lateness_s * 1e9)
        ends = batch.end_ns
        n = len(ends)
        if self._closed < 0 and n:
            self._closed = min(ends) // w - 1
        order = filing.order(ends)
        probes = self._probe_rows(batch)
        if probes:  # health checks and unmatched routes: no baseline, no key of their own
            self.probe_spans += len(probes)
            order = [row for row in order if row not in probes]
            n = len(order)
        by_end = take(ends, order)
        events: list[Event] = []
        batch_keys: dict[tuple[str, str, str, int, str], Key] = {}  # each key touched once
        # No window closes past the fleet's time (a span may end a little ahead of it), nor
        # past a lagging source's latest span while it is waited for.
        front = self.clock.front
        hold = self.clock.hold()
        limit = front if hold is None else min(hold, front)
        pos = 0
        while pos < n:
            # the spans before the first one whose end lets the next window close
            boundary = (self._closed + 2) * w + lateness
            closes_at = n if limit < boundary else bisect_left(by_end, boundary, pos)
            if closes_at == pos:
                self.watermark_ns = max(self.watermark_ns, min(by_end[pos], front))
                closed = self._close_until(self.watermark_ns)
                if on_events is not None:
                    on_events(closed)
                else:
                    events += closed
                continue
            on_time = bisect_left(by_end, (self._closed + 1) * w, pos, closes_at)
            if on_time > pos:
                self._count_late(batch, order[pos:on_time], by_end[pos:on_time])
            if on_time < closes_at:
                self._file(batch, order[on_time:closes_at], by_end[on_time:closes_at], batch_keys)
            pos = closes_at
        if n:
            self.watermark_ns = max(self.watermark_ns, min(by_end[-1], front))
        return events + self._close_until(self.watermark_ns)

    def _probe_rows(self, b: SpanBatch) -> set[int]:
        """Server spans that are probes: a health-check path (``Settings.probe_paths``) or
        gRPC's health service, or a request no route matched (404 and no ``http.route``)."""
        kinds = b.kind
        if _SERVER not in kinds:
            return set()
        paths = self._probe_paths
        routes = b.http_route
        statuses = b.http_status_code
        path_column = b.url_path
        probe_paths = any(p.partition("?")[0] in paths for p in set(path_column) if p)
        health = _HEALTH_RPC in b.rpc_service
        if not (probe_paths or health or 404 in statuses or not paths.isdisjoint(routes)):
            return set()
        rows = set()
        for row in compress(range(len(kinds)), map(eq, kinds, repeat(_SERVER))):
            route = routes[row]
            if (
                (route in paths if route else statuses[row] == 404)
                or (probe_paths and not route and path_column[row].partition("?")[0] in paths)
                or (health and b.rpc_service[row] == _HEALTH_RPC)
            ):
                rows.add(row)
        return rows

    def _count_late(self, b: SpanBatch, rows: list[int], ends: list[int]) -> None:
        """Spans whose window has closed: counted by service, noted by source for the log."""
        self.late_spans += len(rows)
        closed_end = (self._closed + 1) * self._w
        by_source: dict[str, list[int]] = {}
        service_of: dict[str, str] = {}
        for row, end in zip(rows, ends, strict=True):
            by_source.setdefault(b.source[row], []).append(end)
            service_of.setdefault(b.source[row], b.service[row])
        for source, source_ends in by_source.items():
            service = service_of[source]
            self.late[service] += len(source_ends)
            self.clock.note(
                ClockNote("late", source, service, len(source_ends), min(source_ends) - closed_end)
            )

    def _new_epoch(self, forget: bool) -> list[Event]:
        """Time has started over: what was open resolves at its own last window, the windows
        and traces of the old time go. With ``forget`` (time went backward: this is older
        traffic, judged as a fresh detector would) what was learned goes too; otherwise it
        stays (time went on: the baselines still describe the same system)."""
        events = []
        for current in self._open.values():
            resolved = replace(current.incident, resolved_at_ns=(current.last_window + 1) * self._w)
            events.append(Event.incident(EventType.INCIDENT_RESOLVED, resolved))
        if forget:
            fresh = Detector(self.settings)
            fresh.clock, fresh.late, fresh.late_spans = self.clock, self.late, self.late_spans
            fresh.dropped_keys, fresh.probe_spans = self.dropped_keys, self.probe_spans
            vars(self).update(vars(fresh))
            return events
        self._open.clear()
        self._windows.clear()
        self._window_traces.clear()
        self._traces.clear()
        for stats in self._stats.values():
            stats.low_streak = (0.0, 0.0)
        self._closed = -1
        self.watermark_ns = 0
        return events

    def drain_notes(self) -> list[ClockNote]:
        """What the event clock noted since the last call (for the daemon's log)."""
        notes, self.clock.notes = self.clock.notes, []
        return notes

    def _file(
        self,
        b: SpanBatch,
        rows: list[int],
        ends: list[int],
        batch_keys: dict[tuple[str, str, str, int, str], Key],
    ) -> None:
        """File spans (``rows`` of the batch, in end-time order, none of them late; ``ends``
        their end times)."""
        w = self._w
        services = take(b.service, rows)
        scopes = take(b.scope, rows)
        self._track_versions(services, scopes, take(b.service_version, rows), ends)
        kinds = take(b.kind, rows)
        names = take(b.name, rows)
        routes = take(b.http_route, rows)
        # client spans named by their verb alone are keyed by what they call (the operation
        # takes the route's place in the key's identity); the rest as they are named
        calls = self._describer.client_calls(b, rows, kinds)
        if any(calls.operations):
            for j, operation in zip(calls.rows, calls.operations, strict=True):
                if operation:
                    routes[j] = operation
        if any(map(eq, names, routes)):  # server spans named by their route alone (Flask's)
            methods = b.http_method
            for j in compress(range(len(rows)), map(eq, names, routes)):
                method = methods[rows[j]]
                if method and routes[j] and kinds[j] == _SERVER:
                    routes[j] = f"{method} {routes[j]}"  # as "GET /route" is keyed

        # (service, name, route, kind, scope) of each span, made twice rather than kept: a
        # tuple a span kept alive would wake the cycle collector every few hundred spans
        def idents() -> Iterator[tuple[str, str, str, int, str]]:
            return zip(services, names, routes, kinds, scopes, strict=True)

        key_of, complete = self._touch_keys(dict.fromkeys(idents()), batch_keys)
        if not complete:  # more keys in the batch than max_keys: spans of the evicted ones go
            kept = [j for j, ident in enumerate(idents()) if ident in key_of]
            rows, ends = take(rows, kept), take(ends, kept)
            services, names, routes, kinds, scopes = (
                take(c, kept) for c in (services, names, routes, kinds, scopes)
            )
        keys = list(map(key_of.__getitem__, idents()))
        durations = list(map(int.__sub__, ends, take(b.start_ns, rows)))
        trace_ids = take(b.trace_id, rows)
        span_ids = take(b.span_id, rows)
        errors = list(map(eq, take(b.status_code, rows), repeat(_ERROR)))
        # (window, key) -> (signature, span id, trace id) of its failed spans, in order
        failed: dict[tuple[int, Key], list[tuple[str, bytes, bytes]]] = defaultdict(list)
        if any(errors):
            for j in compress(range(len(rows)), errors):
                row = rows[j]
                signature = b.exception_type[row] or template(b.status_message[row][:80])
                failed[ends[j] // w, keys[j]].append(
                    (signature or "error", span_ids[j], trace_ids[j])
                )
        span_windows: list[int] = []
        start = 0
        while start < len(rows):  # one window at a time
            window = ends[start] // w
            stop = bisect_left(ends, (window + 1) * w, start)
            span_windows += [window] * (stop - start)
            self._window_traces.setdefault(window, {}).update(dict.fromkeys(trace_ids[start:stop]))
            bucket = self._windows.setdefault(window, {})
            for key, js in filing.group(keys, start, stop).items():
                acc = bucket.get(key)
                if acc is None:
                    acc = bucket[key] = WindowAcc()
                acc.add_many(
                    take(durations, js),
                    take(trace_ids, js),
                    take(span_ids, js),
                    failed.get((window, key), ()),
                )
            start = stop
        parents = take(b.parent_span_id, rows)
        dependencies = self._describer.dependencies(b, rows, calls, keys)
        # the TraceSpan fields, in its order
        columns = (span_ids, parents, keys, errors, durations, dependencies, span_windows)
        s = self.settings
        keep(
            self._traces,
            self._window_traces,
            trace_ids,
            columns,
            s.max_traces,
            s.max_spans_per_trace,
        )

    def _track_versions(
        self, services: list[str], scopes: list[str], versions: list[str], ends: list[int]
    ) -> None:
        """Note each service's version (within its scope), and a deploy when it changes."""
        known = self._versions
        seen: dict[tuple[str, str], set[str]] = defaultdict(set)
        for service, scope, version in dict.fromkeys(zip(services, scopes, versions, strict=True)):
            if version:
                seen[service, scope].add(version)
        changing = set()
        for ident, found in seen.items():
            if len(found) > 1 or known.get(ident, next(iter(found))) not in found:
                changing.add(ident)
            else:
                known[ident] = next(iter(found))
        if changing:  # in span order, as they changed
            for service, scope, version, end in zip(services, scopes, versions, ends, strict=True):
                ident = (service, scope)
                if version and ident in changing:
                    if known.get(ident, version) != version:
                        self._deploys.append((scope, Deploy(service, known[ident], version, end)))
                    known[ident] = version

    def _touch_keys(
        self,
        idents: Iterable[tuple[str, str, str, int, str]],
        batch_keys: dict[tuple[str, str, str, int, str], Key],
    ) -> tuple[dict[tuple[str, str, str, int, str], Key], bool]:
        """The key of each (service, name, route, kind), touched in the order given, and
        whether every one has its key. Keys evicted meanwhile are forgotten; one of this
        batch's own is evicted only when a batch holds more keys than max_keys, and is left
        out."""
        key_of: dict[tuple[str, str, str, int, str], Key] = {}
        table = self._keys
        evicted: set[Key] = set()
        for ident in idents:
            key = batch_keys.get(ident)
            if key is None:
                service, name, route, kind, scope = ident
                key = Key(service, table.operation_of(name, route, kind), kind, scope)
                key, gone = table.touch(key)
                if gone is not None:
                    self._forget(gone)
                    evicted.add(gone)
                batch_keys[ident] = key
            key_of[ident] = key
        if not evicted:
            return key_of, True
        complete = True
        for ident in [i for i, k in batch_keys.items() if k in evicted]:
            del batch_keys[ident]  # a later segment of the batch touches it again
            if key_of.pop(ident, None) is not None:
                complete = False
        return key_of, complete

    def without_traces(self) -> Detector:
        """A shallow copy to snapshot: everything learned (baselines, keys, open incidents and
        windows), without the recent traces. Those are a minute of context that refills after
        a restart, and nearly all of the time and size of pickling a busy detector."""
        light = copy.copy(self)
        light._traces = OrderedDict()
        light._window_traces = {}
        return light

    def advance(self, watermark_ns: int) -> list[Event]:
        """Move event time forward without spans (the daemon does this when traffic stops)."""
        if watermark_ns > self.watermark_ns:
            self.watermark_ns = watermark_ns
        events: list[Event] = []
        for item in self.clock.advance(self.watermark_ns):  # held too long: wrong clocks
            events += self._file_batch(item.batch)
        return events + self._close_until(self.watermark_ns)

    def _forget(self, key: Key) -> None:
        self.dropped_keys += 1
        self._stats.pop(key, None)
        for bucket in self._windows.values():
            bucket.pop(key, None)
        self._parents.pop(key, None)
        self._retry_ewma.pop(key, None)
        self._call_shares.pop(key, None)

    # -- windows ---------------------------------------------------------------------------

    def _close_until(self, watermark_ns: int) -> list[Event]:
        if self._closed < 0:
            return []
        hold = self.clock.hold()
        watermark_ns = min(watermark_ns, self.clock.front, hold or watermark_ns)
        last = (watermark_ns - int(self.settings.lateness_s * 1e9)) // self._w - 1
        events: list[Event] = []
        silence = self.settings.max_silence_windows
        if last - self._closed > silence:  # a long silence: judge its last hour only
            self._closed = last - silence
        while self._closed < last:
            self._closed += 1
            events += self._close(self._closed)
        return events

    def _close(self, window: int) -> list[Event]:
        s = self.settings
        accs = self._windows.pop(window, {})
        for stale in [w for w in self._windows if w <= window]:
            del self._windows[stale]
        touched = self._window_traces.pop(window, {})
        for stale in [w for w in self._window_traces if w <= window]:
            del self._window_traces[stale]
        self._windows_closed += 1
        window_traces = [spans for t in touched if (spans := self._traces.get(t))]
        # Structure only while the buffer holds whole traces: its oldest trace (the window of
        # its first span) old enough that nothing of the last windows has been evicted.
        oldest = next(iter(self._traces.values()), None)
        whole = oldest is not None and oldest[WINDOW] <= window - s.structure_guard_windows
        calls = self._learn_edges(window_traces, window, whole)
        structure, stopped = self._structure_findings(calls, accs, touched, window)
        findings: dict[Key, list[Finding]] = {}
        learning = self._windows_closed <= s.learn_windows
        for key in set(self._stats) | set(accs):
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = KeyStats(s.fast_epoch_windows, s.slow_epoch_windows)
            acc = accs.get(key)
            found = stats.judge(acc, stats.windows >= s.warmup_windows, s)
            found += structure.get(key, ())
            if acc is not None and acc.signatures:
                found += self._new_error_findings(key, acc, window, learning)
            if found:
                findings[key] = found
            stats.learn(acc, bool(found), s)
        for key, finding in self._retry_findings(window_traces, accs):
            findings.setdefault(key, []).append(finding)
        decay = 1 - s.rate_alpha / 4  # as the error rate
        for key, (n, children) in calls.items():
            if key not in findings:
                shares = self._call_shares.get(key)
                if shares is None:
                    shares = self._call_shares[key] = CallShares()
                shares.learn(n, children, decay, s.max_child_keys)
        groups = self._group(findings, accs, stopped)
        total = sum(a.count for a in accs.values())
        events = self._update_incidents(groups, window, total, accs)
        expire(self._traces, window, s.trace_windows)
        return events

    def _learn_edges(
        self, traces: list[list[Any]], window: int, structure: bool
    ) -> dict[Key, tuple[int, Counter[Key]]]:
        """Learn the call graph from the window's spans; with ``structure``, also count what
        the window's handler spans (server, consumer) called: for each key, (its spans that
        did not fail, how many of them have a child of each key).

        Only handler spans shorter than a window less the lateness are counted: their
        children all ended since the previous window, while the buffer (``structure``) held
        every trace of it, so a missing child is one that was never sent."""
        counts: dict[Key, tuple[int, Counter[Key]]] = {}
        longest = self._w - int(self.settings.lateness_s * 1e9)
        full = self.settings.max_spans_per_trace * WIDTH  # a trace cut short: not judged
        for flat in traces:
            if len(flat) == WIDTH:  # one span: no parent within the trace, and no calls
                if structure:
                    _, _, key, error, duration, _, at = flat
                    if (
                        at == window
                        and not error
                        and duration <= longest
                        and key.kind in _HANDLER_KINDS
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
                        parents = self._parents[key]
                        if len(parents) < 32:
                            parents.add(parent_key)
            if not structure or len(flat) >= full:
                continue
            handlers = [
                j
                for j, (key, at) in enumerate(zip(keys, windows, strict=True))
                if at == window and key.kind in _HANDLER_KINDS
            ]
            if not handlers:
                continue
            errors = flat[ERROR::WIDTH]
            durations = flat[DURATION::WIDTH]
            mine: dict[bytes, set[Key]] = {span_ids[j]: set() for j in handlers}
            for parent, key in zip(flat[PARENT::WIDTH], keys, strict=True):
                below = mine.get(parent)
                if below is not None:
                    below.add(key)
            for j in handlers:
                if errors[j] or durations[j] > longest:
                    continue
                key = keys[j]
                entry = counts.get(key)
                if entry is None:
                    entry = counts[key] = (0, Counter())
                counts[key] = (entry[0] + 1, entry[1])
                entry[1].update(mine[span_ids[j]])
        return counts

    def _structure_findings(
        self,
        calls: dict[Key, tuple[int, Counter[Key]]],
        accs: dict[Key, WindowAcc],
        trace_ids: Iterable[bytes],
        window: int,
    ) -> tuple[dict[Key, list[Finding]], dict[Key, Key]]:
        """Keys whose spans no longer make a usual call (they stop short): an error finding
        each, for the call missed most; and that call of each."""
        s = self.settings
        out: dict[Key, list[Finding]] = {}
        stopped: dict[Key, Key] = {}
        for key, (n, children) in calls.items():
            shares = self._call_shares.get(key)
            stats = self._stats.get(key)
            if shares is None or stats is None or stats.windows < s.warmup_windows:
                continue
            acc = accs.get(key)
            if acc is not None and acc.errors > s.structure_failed_share * acc.count:
                continue  # mostly failed: the error finding tells it
            floor = max(s.min_error_rate, 1 / (shares.spans + 1))
            worst: tuple[int, float, Key] | None = None
            for child, learned in shares.calls.items():
                share = learned / shares.spans
                if share < s.structure_usual:
                    continue
                m = n - children.get(child, 0)
                q = max(floor, 1 - share)
                if (
                    m >= s.min_errors
                    and m / n >= max(s.min_error_share, s.error_factor * q)
                    and chernoff_upper(m, n, q) < s.p_value
                    and (worst is None or (m, -q, child) > (worst[0], -worst[1], worst[2]))
                ):
                    worst = (m, q, child)
            if worst is None:
                continue
            m, q, child = worst
            stopped[key] = child
            label, examples = self._missing_calls(key, child, trace_ids, window)
            out[key] = [
                Finding(
                    Family.ERRORS,
                    "missing_call_rate",
                    m / n,
                    q,
                    "ratio",
                    (m / n) / q,
                    m,
                    signature=label,
                    examples=examples,
                )
            ]
        return out, stopped

    def _missing_calls(
        self, key: Key, child: Key, trace_ids: Iterable[bytes], window: int
    ) -> tuple[str, tuple[tuple[bytes, bytes], ...]]:
        """What a call of key ``child`` calls (the server span under it, else the system it
        names, else itself), and (trace id, span id) of up to 5 of the window's spans of
        ``key`` that did not make it: the smallest span ids, whatever order traces came in."""
        labels: set[str] = set()
        examples: list[tuple[bytes, bytes]] = []
        for trace_id in trace_ids:
            flat = self._traces.get(trace_id)
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
                    and all(c.key != child for c in children.get(sp.span_id, ()))
                ):
                    examples.append((sp.span_id, trace_id))
        examples.sort()
        label = min(labels) if labels else f"{child.service} {child.operation}"
        return label, tuple((t, sp) for sp, t in examples[:5])

    def _new_error_findings(
        self, key: Key, acc: WindowAcc, window: int, learning: bool
    ) -> list[Finding]:
        known = self._known_errors[key.service, key.scope]
        stats = self._stats.get(key)
        baseline_rate = stats.error_rate() if stats is not None else 0.0
        out = []
        for signature, count in (acc.signatures or {}).items():
            if signature in known or self._common_elsewhere(signature, (key.service, key.scope)):
                continue
            if learning:
                known.add(signature)
                continue
            ident = (key.service, key.scope, signature)
            entry = self._new_errors.get(ident)
            if entry is None:
                # The rate it may have had unseen: half a span in the key's recent exposure,
                # which held none of it (the decayed span count the error rate is learned on).
                exposure = stats.err_n if stats is not None else 0.0
                entry = (window, 0, max(self.settings.min_new_error_rate, 0.5 / (exposure + 1)))
                if len(self._new_errors) >= 4 * self.settings.max_keys:  # bounded
                    del self._new_errors[next(iter(self._new_errors))]
            first, total, prior = entry
            total += count
            self._new_errors[ident] = (first, total, prior)
            spans = max(acc.count, round((window - first + 1) * (stats.count_ewma if stats else 0)))
            if window - first >= self.settings.new_error_windows:
                known.add(signature)  # it has been around long enough to be ordinary
                del self._new_errors[ident]
            elif (
                count >= 3
                and chernoff_upper(
                    count, acc.count, max(self.settings.min_error_rate, baseline_rate)
                )
                < self.settings.p_value
            ) or (
                # evidence accumulated since it first appeared: a few percent of one
                # operation's requests, or fewer, shows within minutes
                total >= 3 and chernoff_upper(total, spans, prior) < self.settings.p_value
            ):
                count = max(count, total)
                out.append(
                    Finding(
                        Family.NEW_ERROR,
                        "new_error_count",
                        float(count),
                        0.0,
                        "spans",
                        float(count),
                        count,
                        signature=signature,
                    )
                )
        return out

    def _common_elsewhere(self, signature: str, service: tuple[str, str]) -> bool:
        """A generic failure (a transport status many services raise) is not a new error."""
        others = {
            svc[0]
            for svc, known in self._known_errors.items()
            if svc[0] != service[0] and signature in known
        }  # other services by name: one service in three environments is one service
        return len(others) >= 2

    def _retry_findings(
        self, traces: list[list[Any]], accs: dict[Key, WindowAcc]
    ) -> list[tuple[Key, Finding]]:
        s = self.settings
        per_key: Counter[Key] = Counter()
        retried: Counter[Key] = Counter()
        worst: dict[Key, int] = {}
        for flat in traces:
            if len(flat) == WIDTH:  # one span: one call at most
                key = flat[KEY]
                if key.kind in CLIENT_KINDS:
                    per_key[key] += 1
                continue
            # A retry is one caller span making the same call again and again.
            clients = [
                (parent, key)
                for parent, key in zip(flat[PARENT::WIDTH], flat[KEY::WIDTH], strict=True)
                if key.kind in CLIENT_KINDS
            ]
            if not clients:
                continue
            if len(set(clients)) == len(clients):  # the common case: no call repeated
                for key in dict.fromkeys(k for _, k in clients):
                    per_key[key] += 1
                continue
            calls = Counter(clients)
            repeats: dict[Key, int] = {}
            for (_, key), n in calls.items():
                repeats[key] = max(repeats.get(key, 0), n)
            for key, n in repeats.items():
                per_key[key] += 1
                if n >= self.settings.retry_repeats:
                    retried[key] += 1
                    worst[key] = max(worst.get(key, 0), n)
        out = []
        for key, traces_with_key in per_key.items():
            share = retried[key] / traces_with_key
            baseline = self._retry_ewma.get(key, 0.0)
            stats = self._stats.get(key)
            warm = stats is not None and stats.windows >= self.settings.warmup_windows
            if (
                warm
                and retried[key] >= s.retry_min_traces
                and share >= s.retry_share
                and baseline < s.retry_usual
            ):
                out.append(
                    (
                        key,
                        Finding(
                            Family.RETRY,
                            "calls_per_trace",
                            float(worst[key]),
                            1.0,
                            "calls",
                            float(worst[key]),
                            retried[key],
                        ),
                    )
                )
            else:
                self._retry_ewma[key] = 0.9 * baseline + 0.1 * share
        return out

    # -- root cause ------------------------------------------------------------------------

    def _group(
        self,
        findings: dict[Key, list[Finding]],
        accs: dict[Key, WindowAcc],
        stopped: dict[Key, Key],
    ) -> dict[Operation, _Group]:
        groups: dict[Operation, _Group] = {}
        dropping = {k for k, fs in findings.items() if any(f.family is Family.TRAFFIC for f in fs)}
        # where each failing key's errors were traced to: a drop below a caller that fails
        # now is that failure's (a handler that fails stops short: its later calls vanish)
        failing_root: dict[Key, Operation] = {}
        # errors first, so that the drops they explain find their roots
        ordered = sorted(
            ((key, finding) for key, found in findings.items() for finding in found),
            key=lambda kf: kf[1].family is Family.TRAFFIC,
        )
        for key, finding in ordered:
            acc = accs.get(key)
            explained = (
                self._failing_caller(key, failing_root)
                if finding.family is Family.TRAFFIC and failing_root
                else None
            )
            examples: list[tuple[bytes, bytes]] = []
            if explained is not None:
                root, is_dep, cascading, edge = explained, False, False, False
            else:
                root, is_dep, cascading, edge, examples = self._root_cause(
                    key, finding, acc, dropping, stopped
                )
            if finding.family in (Family.ERRORS, Family.NEW_ERROR) and not is_dep:
                failing_root.setdefault(key, root)
            dependency_op = ""
            if is_dep:  # one incident per dependency, whatever operations were slow
                root, dependency_op = Operation(root.service, "", root.scope), root.operation
            group = groups.get(root)
            if group is None:
                group = groups[root] = _Group(root, is_dep)
            if dependency_op:
                group.dependency_ops[dependency_op] += 1
            group.findings.append((key, finding))
            group.cascading |= cascading
            group.edge |= edge
            for trace_id, span_id in examples:
                if len(group.trace_ids) < 5 and trace_id not in group.trace_ids:
                    group.trace_ids.append(trace_id)
                    group.example_span = group.example_span or span_id
        return groups

    def _failing_caller(self, key: Key, failing_root: dict[Key, Operation]) -> Operation | None:
        """The root of the errors of a caller of ``key`` (directly or not) that fails in this
        window, if one does (the first in key order, so that any batching gives the same)."""
        callers = [k for k in self._ancestors({key}) if k in failing_root]
        return failing_root[min(callers)] if callers else None

    def _root_cause(
        self,
        key: Key,
        finding: Finding,
        acc: WindowAcc | None,
        dropping: set[Key],
        stopped: dict[Key, Key],
    ) -> tuple[Operation, bool, bool, bool, list[tuple[bytes, bytes]]]:
        """(root, root is a dependency, errors cascaded through callers, the trouble is on the
        edge in front of the root, example spans). ``stopped``: the keys that stopped short
        this window, and the call each no longer makes."""
        if finding.family is Family.TRAFFIC:
            top = key
            seen = {key}
            parents = self._parents
            while True:
                # a client key is an edge, and one that several calls share (GET catalog)
                # may not drop with this one: the walk looks through it to its callers
                above = set()
                for p in parents.get(top, ()):
                    if p in dropping:
                        above.add(p)
                    elif p.kind in CLIENT_KINDS:
                        above.update(g for g in parents.get(p, ()) if g in dropping)
                up = [p for p in above if p not in seen]
                if not up:
                    break
                top = min(up)
                seen.add(top)
            return Operation(top.service, top.operation, top.scope), False, False, False, []
        if finding.metric == "missing_call_rate":
            return self._stopped_root(key, finding, stopped)
        if acc is None:
            return Operation(key.service, key.operation, key.scope), False, False, False, []
        if finding.family is Family.LATENCY:
            examples = [(t, sp) for _, t, sp in acc.slowest]
            step = self._slow_child
        else:
            examples = acc.example_ids(errors=True)
            step = self._failing_child
        votes: Counter[tuple[Operation, bool]] = Counter()
        cascades = edges = 0
        for trace_id, span_id in examples[:20]:
            trace = read(self._traces, trace_id)
            if trace is None:
                continue
            by_id, children = trace.by_id, trace.children
            span = by_id.get(span_id)
            if span is None:
                continue
            while (child := step(span, children.get(span.span_id, []))) is not None:
                span = child
            callee = (
                next((c for c in children.get(span.span_id, ()) if c.key.kind == _SERVER), None)
                if span.key.kind == _CLIENT
                else None
            )
            if callee is not None:
                # The call was slow (or failed) and the callee's own span explains none of it:
                # the time went in front of the callee (network, ingress). It is the callee's.
                votes[
                    (Operation(callee.key.service, callee.key.operation, callee.key.scope), False)
                ] += 1
                edges += 1
            elif (
                span.key.kind in CLIENT_KINDS
                and span.dependency[0]
                and not children.get(span.span_id)
            ):
                name, operation = span.dependency
                votes[(Operation(name, operation, span.key.scope), True)] += 1
            else:
                votes[(Operation(span.key.service, span.key.operation, span.key.scope), False)] += 1
            if finding.family in (Family.ERRORS, Family.NEW_ERROR):
                services = set()
                node: TraceSpan | None = span
                while node is not None:
                    if node.error and node.key.kind in (SpanKind.SERVER, SpanKind.CONSUMER):
                        services.add(node.key.service)
                    node = by_id.get(node.parent)
                cascades += len(services) >= self.settings.cascade_services
        if not votes:
            return (
                Operation(key.service, key.operation, key.scope),
                False,
                False,
                False,
                examples[:5],
            )
        (root, is_dep), _ = votes.most_common(1)[0]
        total = sum(votes.values())
        return root, is_dep, cascades * 2 > total, edges * 2 > total, examples[:5]

    def _stopped_root(
        self, key: Key, finding: Finding, stopped: dict[Key, Key]
    ) -> tuple[Operation, bool, bool, bool, list[tuple[bytes, bytes]]]:
        """The root of a key's spans stopping short: from its example spans down through the
        calls they made into spans that stopped short too (of keys that did this window, and
        without the call those no longer make), to the deepest; a cascade when that passes
        through cascade_services services, as failing servers do."""
        votes: Counter[Key] = Counter()
        cascades = 0
        for trace_id, span_id in finding.examples:
            trace = read(self._traces, trace_id)
            node = trace.by_id.get(span_id) if trace is not None else None
            if trace is None or node is None:
                continue
            children = trace.children
            services = {node.key.service}
            for _ in range(self.settings.max_incident_services):
                below = children.get(node.span_id, [])
                # handlers under it, directly or through the client span that called them
                handlers = [c for c in below if c.key.kind in _HANDLER_KINDS] + [
                    g
                    for c in below
                    if c.key.kind not in _HANDLER_KINDS
                    for g in children.get(c.span_id, ())
                    if g.key.kind in _HANDLER_KINDS
                ]
                short = [
                    h
                    for h in handlers
                    if (missing := stopped.get(h.key)) is not None
                    and not h.error
                    and all(c.key != missing for c in children.get(h.span_id, ()))
                ]
                if not short:
                    break
                node = min(short, key=lambda h: h.span_id)
                services.add(node.key.service)
            votes[node.key] += 1
            cascades += len(services) >= self.settings.cascade_services
        total = sum(votes.values())
        top = max(votes, key=lambda k: (votes[k], k)) if votes else key
        root = Operation(top.service, top.operation, top.scope)
        return root, False, cascades * 2 > total > 0, False, list(finding.examples)

    @staticmethod
    def _failing_child(span: TraceSpan, children: list[TraceSpan]) -> TraceSpan | None:
        failing = [c for c in children if c.error]
        return max(failing, key=lambda c: c.duration) if failing else None

    def _slow_child(self, span: TraceSpan, children: list[TraceSpan]) -> TraceSpan | None:
        """The child whose own extra time explains most of this span's extra time."""
        stats = self._stats.get(span.key)
        ready = self.settings.min_latency_samples
        excess = span.duration - (
            stats.quantiles()[0] if stats and stats.fast.count() >= ready else 0
        )
        best, best_excess = None, 0.5 * excess
        for child in children:
            child_stats = self._stats.get(child.key)
            if child_stats is None or child_stats.fast.count() < ready:
                continue
            child_excess = child.duration - child_stats.quantiles()[0]
            if child_excess > best_excess:
                best, best_excess = child, child_excess
        return best

    # -- incidents ---------------------------------------------------------------------------

    def _pattern(self, group: _Group) -> Pattern:
        families = {f.family for _, f in group.findings}
        # The more specific explanation wins: retries explain the errors they cause, and a
        # failure spreading through callers is a bigger story than a new error type.
        if Family.RETRY in families:
            return Pattern.RETRY_STORM
        if group.cascading:
            return Pattern.CASCADING_FAILURE
        if Family.NEW_ERROR in families:
            return Pattern.NEW_ERROR
        if Family.ERRORS in families:
            return Pattern.ERROR_BURST
        if Family.LATENCY in families:
            if group.is_dependency:
                return Pattern.SLOW_DEPENDENCY
            if all(f.drift for _, f in group.findings if f.family is Family.LATENCY):
                return Pattern.LATENCY_DRIFT
            return Pattern.LATENCY_SPIKE
        return Pattern.TRAFFIC_DROP

    def _severity(
        self, pattern: Pattern, group: _Group, services: set[str], window_spans: int
    ) -> Severity:
        s = self.settings
        level = 2 + _PRIORITY[pattern]
        big = any(
            (f.family is Family.ERRORS and f.observed >= s.severe_error_rate)
            or (f.family is Family.LATENCY and f.magnitude >= s.severe_latency_ratio)
            or (f.family is Family.TRAFFIC and f.magnitude >= s.severe_drop)
            or (f.family is Family.RETRY and f.magnitude >= s.severe_retries)
            for _, f in group.findings
        )
        entry_hit = any(not self._parents.get(k) and k.is_entry_kind for k, _ in group.findings)
        affected = sum(f.affected for _, f in group.findings)
        level -= big
        level -= entry_hit or len(services) >= s.wide_services
        if window_spans and affected / window_spans < s.minor_share and not entry_hit:
            level += 1
        return Severity(min(5, max(1, level)))

    def _update_incidents(
        self,
        groups: dict[Operation, _Group],
        window: int,
        window_spans: int,
        accs: dict[Key, WindowAcc],
    ) -> list[Event]:
        events: list[Event] = []
        start_ns = window * self._w
        end_ns = start_ns + self._w
        for root, group in sorted(groups.items(), key=lambda rg: (rg[0].service, rg[0].operation)):
            keys = {k for k, _ in group.findings}
            current = self._open.get(root)
            same_root = current is not None
            if current is None:
                # A symptom joins an open incident only while that incident's root is anomalous
                # now (this window or the last), and only when it is the root's own key or a
                # caller of it; so one incident that never resolves cannot absorb later faults.
                # Another operation of the same service failing (or slowing) the same way now
                # is the same fault (shared code, a shared database): one incident.
                family = _FAMILY_OF[self._pattern(group)]
                current = next(
                    (
                        o
                        for o in self._open.values()
                        if o.last_window >= window - 1
                        and len(o.incident.services) < self.settings.max_incident_services
                        and (
                            keys & (o.keys | self._ancestors(o.keys))
                            or (
                                (o.incident.root_cause.service, o.incident.root_cause.scope)
                                == (root.service, root.scope)
                                and _FAMILY_OF[o.incident.pattern] is family
                                and not group.is_dependency
                            )
                        )
                    ),
                    None,
                )
            services = {k.service for k in keys} | (
                {root.service} if not group.is_dependency else set()
            )
            pattern = self._pattern(group)
            severity = self._severity(pattern, group, services, window_spans)
            root_op = root
            if group.is_dependency and group.dependency_ops:
                root_op = Operation(
                    root.service, group.dependency_ops.most_common(1)[0][0], root.scope
                )
            lead_of_group = _lead_finding(pattern, group)
            assert lead_of_group is not None  # a group always has a finding
            key, finding = lead_of_group
            if current is None:
                digest = hashlib.sha1(
                    f"{pattern}|{root.service}|{root.operation}|{root.scope}|{start_ns}".encode()
                ).hexdigest()[:16]
                streak = self._stats[key].low_streak[1] if finding.family is Family.TRAFFIC else 0
                started = start_ns
                if streak and self._stats[key].count_ewma:
                    started = end_ns - int(streak / self._stats[key].count_ewma) * self._w
                incident = Incident(
                    id=f"inc-{digest}",
                    severity=severity,
                    pattern=pattern,
                    service=key.service,
                    operation=key.operation,
                    root_cause=root_op,
                    started_at_ns=started,
                    detected_at_ns=end_ns,
                    evidence=Evidence(
                        finding.metric,
                        round(finding.observed, 6),
                        round(finding.baseline, 6),
                        finding.unit,
                    ),
                    summary=_summary(pattern, root_op, finding, group.edge),
                    trace_ids=tuple(group.trace_ids),
                    example_span_id=group.example_span,
                    services=tuple(sorted(services)),
                    deploys=tuple(
                        d
                        for scope, d in self._deploys
                        if scope == root.scope
                        and d.service in services
                        and d.at_ns >= started - _DEPLOY_HORIZON_NS
                    ),
                    critical_path=self._critical_path(group.trace_ids[:1]),
                    resource=tuple(split_scope(root.scope, self.settings.identity).items()),
                )
                opened = _Open(incident, keys, window, key, finding, group.edge)
                opened.shown_window = window
                self._measure_into(opened, accs, window, at_opening=True)
                self._open[root] = opened
                events.append(Event.incident(EventType.INCIDENT_OPENED, opened.incident))
                continue
            if same_root:  # only evidence about its own root keeps an incident open
                current.last_window = window
                current.healthy = 0
                current.keys |= keys
            old = current.incident
            merged = tuple(sorted(set(old.services) | services))
            if len(merged) > self.settings.max_incident_services:
                merged = old.services
            # Only evidence about the incident's own root cause refines its pattern.
            refined = same_root and _SPECIFICITY[pattern] < _SPECIFICITY[old.pattern]
            if severity < old.severity or merged != old.services or refined:
                shown = pattern if refined else old.pattern
                summary, evidence = old.summary, old.evidence
                found = _lead_finding(shown, group, strict=True) if same_root else None
                if found is not None:  # only evidence of its own kind, about its own root cause
                    lead_key, lead = found
                    summary = _summary(shown, old.root_cause, lead)
                    same_metric = lead.metric == evidence.metric and lead_key == current.lead
                    evidence = Evidence(
                        lead.metric,
                        round(lead.observed, 6),
                        round(lead.baseline, 6),
                        lead.unit,
                        evidence.peak if same_metric else round(lead.observed, 6),
                        evidence.share if same_metric else 0.0,
                    )
                    if not same_metric:  # a new measure: its own series
                        current.series.clear()
                        current.recent.clear()
                    current.lead, current.finding, current.counted = lead_key, lead, 0
                current.incident = replace(
                    old,
                    severity=min(severity, old.severity),
                    services=merged,
                    pattern=shown,
                    summary=summary,
                    evidence=evidence,
                )
                current.shown_window = window
                self._measure_into(current, accs, window, at_opening=True)
                events.append(Event.incident(EventType.INCIDENT_UPDATED, current.incident))
        for current in self._open.values():  # the evidence follows the fault
            if current.shown_window != window and self._measure_into(current, accs, window):
                events.append(Event.incident(EventType.INCIDENT_UPDATED, current.incident))
            lead_acc = accs.get(current.lead)
            if current.last_window != window and lead_acc is not None and lead_acc.count:
                current.healthy += 1  # its spans came, and showed nothing
        for root, current in list(self._open.items()):
            quiet = self.settings.quiet_windows
            if current.incident.pattern is Pattern.LATENCY_DRIFT:  # a creep shows on and off
                quiet = max(quiet, self.settings.drift_quiet_windows)
            # Quiet means windows whose spans showed nothing: a key at a request every few
            # windows is not well again for having sent nothing. One that sends nothing at
            # all for silent_resolve_windows resolves anyway.
            silent = window - current.last_window
            if current.healthy >= quiet or silent >= max(
                quiet, self.settings.silent_resolve_windows
            ):
                resolved = replace(
                    current.incident, resolved_at_ns=(current.last_window + 1) * self._w
                )
                del self._open[root]
                events.append(Event.incident(EventType.INCIDENT_RESOLVED, resolved))
        return events

    def _measure_into(
        self, current: _Open, accs: dict[Key, WindowAcc], window: int, at_opening: bool = False
    ) -> bool:
        """Add this window's measure of the incident's lead key to its evidence and series;
        whether the change is worth an update now (never ``at_opening``: an event is going
        out anyway, and it carries the finding's own value)."""
        old = current.incident
        evidence = old.evidence
        measured = self._measure(evidence.metric, current.lead, current.finding.signature, accs)
        if measured is None:
            return False
        value, share_now, spans = measured
        if evidence.metric == "new_error_count" and not at_opening:
            current.counted += int(value)
        at = (window + 1) * self._w
        current.series.append(SeriesPoint(at, round(value, 6), evidence.baseline))
        recent = current.recent
        recent.append((value, share_now, spans))
        weight = sum(n for _, _, n in recent) or 1
        observed = round(sum(v * n for v, _, n in recent) / weight, 6)
        share = round(sum(f * n for _, f, n in recent) / weight, 4)
        lower_is_worse = evidence.metric == "requests_per_window"
        worst = min if lower_is_worse else max
        if at_opening:
            observed = evidence.observed
            peak = evidence.peak or observed
        else:
            peak = worst(evidence.peak, observed)
        current.incident = replace(
            old,
            evidence=replace(evidence, observed=observed, peak=peak, share=share),
            series=tuple(current.series),
        )
        last_observed, last_share = current.shown
        if at_opening:
            current.shown = (observed, share)
            return False
        scale = max(abs(last_observed), abs(evidence.baseline), 1e-9)
        moved = (
            abs(observed - last_observed) > _MOVED * scale
            or abs(share - last_share) >= _SHARE_MOVED
        )
        if not moved or window - current.shown_window < UPDATEWINDOWS:
            return False
        current.shown, current.shown_window = (observed, share), window
        now = replace(
            current.finding,
            observed=observed,
            affected=current.finding.affected + current.counted,
        )
        summary = _summary(old.pattern, old.root_cause, now, current.edge)
        current.incident = replace(current.incident, summary=summary)
        return True

    def _measure(
        self, metric: str, key: Key, signature: str, accs: dict[Key, WindowAcc]
    ) -> tuple[float, float, int] | None:
        """(value, share of the key's spans affected, weight) of an evidence metric in this
        window; None when the window cannot tell (no spans of the key)."""
        acc = accs.get(key)
        stats = self._stats.get(key)
        if metric == "requests_per_window":
            n = acc.count if acc else 0
            expected = stats.count_ewma if stats else 0.0
            return float(n), (max(0.0, 1 - n / expected) if expected else 0.0), 1
        if acc is None or not acc.count:
            return None
        n = acc.count
        if metric == "error_rate":
            return acc.errors / n, acc.errors / n, n
        if metric == "new_error_count":
            count = acc.signatures.get(signature, 0) if acc.signatures else 0
            return float(count), count / n, n
        if metric == "p50_latency_ms" and stats is not None:
            durations = acc.durations
            if not durations:
                return None
            slow_above = stats.slow_above(self.settings)
            slow = sum(1 for d in durations if d > slow_above)
            return median(durations) / 1e6, slow / len(durations), n
        return None  # calls per trace: told by the findings alone

    def _critical_path(self, trace_ids: list[bytes]) -> tuple[PathStep, ...]:
        """From the entry span down, following the failing child, else the longest one."""
        for trace_id in trace_ids:
            trace = read(self._traces, trace_id)
            if trace is None:
                continue
            children = trace.children
            roots = [sp for sp in trace.spans if sp.parent not in trace.by_id]
            node = max(roots, key=lambda sp: sp.duration) if roots else None
            steps: list[PathStep] = []
            while node is not None and len(steps) < 12:
                steps.append(
                    PathStep(
                        node.key.service,
                        node.key.operation,
                        SpanKind(node.key.kind).name.lower(),
                        round(node.duration / 1e6, 3),
                        "error" if node.error else "",
                    )
                )
                below = children.get(node.span_id, [])
                failing = [c for c in below if c.error]
                node = max(failing or below, key=lambda c: c.duration) if below else None
            return tuple(steps)
        return ()

    def _ancestors(self, keys: set[Key], limit: int = 256) -> set[Key]:
        """Every key that calls one of ``keys``, directly or not (bounded)."""
        seen: set[Key] = set()
        todo = list(keys)
        while todo and len(seen) < limit:
            for parent in self._parents.get(todo.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    @property
    def open_incidents(self) -> list[Incident]:
        return [o.incident for o in self._open.values()]

    @property
    def tracked_keys(self) -> int:
        return len(self._keys)


_FAMILY_OF = {
    Pattern.RETRY_STORM: Family.RETRY,
    Pattern.NEW_ERROR: Family.NEW_ERROR,
    Pattern.ERROR_BURST: Family.ERRORS,
    Pattern.CASCADING_FAILURE: Family.ERRORS,
    Pattern.LATENCY_SPIKE: Family.LATENCY,
    Pattern.LATENCY_DRIFT: Family.LATENCY,
    Pattern.SLOW_DEPENDENCY: Family.LATENCY,
    Pattern.TRAFFIC_DROP: Family.TRAFFIC,
}


def _lead_finding(
    pattern: Pattern, group: _Group, strict: bool = False
) -> tuple[Key, Finding] | None:
    """The strongest finding of the pattern's own kind, on the root's own key if it has one:
    what the evidence and summary show.

    Without one: the strongest finding of any kind, or None when ``strict``."""
    family = _FAMILY_OF[pattern]
    matching = [kf for kf in group.findings if kf[1].family == family]
    if not matching and strict:
        return None
    root = group.root
    # the root's own spans first: a caller's view of the fault is a symptom of it
    own = [
        kf
        for kf in matching
        if (kf[0].service, kf[0].operation, kf[0].scope)
        == (root.service, root.operation, root.scope)
    ]
    return max(own or matching or group.findings, key=lambda kf: (kf[1].magnitude, kf[1].affected))


def _summary(pattern: Pattern, root: Operation, finding: Finding, edge: bool = False) -> str:
    where = f"{root.service} {root.operation}".strip()
    if edge:  # its callers saw it, its own spans did not
        where = (
            f"the calls into {where} (network or ingress in front of it; its own spans are normal)"
        )
    if finding.metric == "missing_call_rate":
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: {finding.observed:.0%} of its "
            f"spans no longer call {finding.signature} (usually {1 - finding.baseline:.0%} do)"
        )
    if finding.family is Family.ERRORS:
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: error rate "
            f"{finding.observed:.0%} (baseline {finding.baseline:.1%})"
        )
    if finding.family is Family.LATENCY:
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: median "
            f"{finding.observed:.1f} ms (baseline {finding.baseline:.1f} ms)"
        )
    if finding.family is Family.TRAFFIC:
        return (
            f"traffic drop at {where}: {finding.observed:.0f} spans per window "
            f"(expected {finding.baseline:.0f})"
        )
    if finding.family is Family.NEW_ERROR:
        return f"new error at {where}: {finding.signature} ({finding.affected} times)"
    return f"retry storm at {where}: up to {finding.observed:.0f} calls per trace"
