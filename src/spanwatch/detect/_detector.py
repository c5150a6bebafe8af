"""The detector: span batches and watermarks in, incident events out. No I/O, no clock.

``process(batch)`` files every span into its key's event-time window and closes the windows
that the watermark (the latest span end, minus the allowed lateness) has passed;
``advance(watermark)`` closes windows when no spans arrive. Closing a window judges every key
against its baseline, finds each anomaly's root cause in the recent traces, groups anomalies
that share a root cause into one incident, and opens, updates or resolves incidents.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from itertools import compress, repeat
from operator import eq

from spanwatch.model import Event, Incident, Operation, Pattern, SpanBatch, SpanKind, StatusCode

from . import _filing as filing
from ._calls import CallDescriber
from ._clock import BACKWARD, ClockNote, EventClock
from ._filing import take
from ._grouping import group_findings
from ._keys import CallNames, Key, KeyTable, template
from ._lifecycle import Deploys, Incidents
from ._new_errors import BARE_ERROR, NewErrors, Retries
from ._probes import probe_rows
from ._rootcause import RootCause
from ._settings import Settings
from ._stats import NO_STREAK, CallShares, Finding, KeyStats, WindowAcc
from ._structure import Structure, calling
from ._traces import ANSWERED, WINDOW, Traces, expire, keep

# Plain ints for the per-span loop (enum comparisons cost more than the rest of its work).
_SERVER = int(SpanKind.SERVER)
_ERROR = int(StatusCode.ERROR)
_CLIENT = int(SpanKind.CLIENT)


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
        self._parents: dict[Key, set[Key]] = defaultdict(set)  # key -> the keys that call it
        # key -> the share of its spans that call each child key (its usual calls)
        self._call_shares: dict[Key, CallShares] = {}
        self._windows_closed = 0
        # The collaborators share the state above (never rebound but by _new_epoch, which
        # replaces them all); the recent traces are handed to each call, so that a copy
        # without them (without_traces) holds none.
        self._structure = Structure(s, self._stats, self._parents, self._call_shares)
        self._new_errors = NewErrors(s, self._stats)
        self._retries = Retries(s, self._stats)
        self._root_cause = RootCause(s, self._stats, self._parents, self._structure.own_baselines)
        self._deploys = Deploys(s)
        self._incidents = Incidents(s, self._stats, self._parents, self._deploys)
        self.late_spans = 0
        self.probe_spans = 0  # health checks and unmatched routes, left out of baselines
        self.late: Counter[str] = Counter()  # late spans by service
        self.dropped_keys = 0
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
        probes = probe_rows(batch, self._probe_paths)
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
        events = self._incidents.resolve_all()
        if forget:
            fresh = Detector(self.settings)
            fresh.clock, fresh.late, fresh.late_spans = self.clock, self.late, self.late_spans
            fresh.dropped_keys, fresh.probe_spans = self.dropped_keys, self.probe_spans
            vars(self).update(vars(fresh))
            return events
        self._windows.clear()
        self._window_traces.clear()
        self._traces.clear()
        for stats in self._stats.values():
            stats.low_streak = NO_STREAK
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
        self._deploys.track(services, scopes, take(b.service_version, rows), ends)
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

        key_of, complete, evicted = self._keys.touch_all(dict.fromkeys(idents()), batch_keys)
        for gone in evicted:
            self._forget(gone)
        if not complete:  # more keys in the batch than max_keys: spans of the evicted ones go
            kept = [j for j, ident in enumerate(idents()) if ident in key_of]
            rows, ends = take(rows, kept), take(ends, kept)
            services, names, routes, kinds, scopes = (
                take(c, kept) for c in (services, names, routes, kinds, scopes)
            )
            calls = self._describer.client_calls(b, rows, kinds)  # by index into the rows
        keys = list(map(key_of.__getitem__, idents()))
        durations = list(map(int.__sub__, ends, take(b.start_ns, rows)))
        trace_ids = take(b.trace_id, rows)
        span_ids = take(b.span_id, rows)
        errors = list(map(eq, take(b.status_code, rows), repeat(_ERROR)))
        # (window, key) -> (signature, span id, trace id) of its failed spans, in order
        failed: dict[tuple[int, Key], list[tuple[str, bytes, bytes]]] = defaultdict(list)
        if any(errors):
            statuses = b.http_status_code
            for j in compress(range(len(rows)), errors):
                row = rows[j]
                if statuses[row] >= 400 and keys[j].kind == _CLIENT:
                    errors[j] = ANSWERED  # the callee answered it: no network trouble
                signature = b.exception_type[row] or template(b.status_message[row][:80])
                failed[ends[j] // w, keys[j]].append(
                    (signature or BARE_ERROR, span_ids[j], trace_ids[j])
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
        columns = (span_ids, parents, keys, errors, durations, dependencies, ends, span_windows)
        s = self.settings
        keep(
            self._traces,
            self._window_traces,
            trace_ids,
            columns,
            s.max_traces,
            s.max_spans_per_trace,
        )

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
        self._structure.forget(key)
        self._retries.forget(key)
        self._root_cause.forget(key)

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
        """Judge a window, find its anomalies' root causes, and update the incidents."""
        s = self.settings
        accs = self._windows.pop(window, {})
        for stale in [w for w in self._windows if w <= window]:
            del self._windows[stale]
        touched = self._window_traces.pop(window, {})
        for stale in [w for w in self._window_traces if w <= window]:
            del self._window_traces[stale]
        self._windows_closed += 1
        traces = self._traces
        kept = [t for t in touched if traces.get(t)]
        window_traces = [traces[t] for t in kept]
        # Structure only while the buffer holds whole traces: its oldest trace (the window of
        # its first span) old enough that nothing of the last windows has been evicted.
        oldest = next(iter(traces.values()), None)
        whole = oldest is not None and oldest[WINDOW] <= window - s.structure_guard_windows
        structure = self._structure
        # every key of the window has its stats before the call-graph pass (it reads which
        # keys are INTERNAL from them), in the order the keys came
        for key in accs:
            if key not in self._stats:
                self._stats[key] = KeyStats(s.fast_epoch_windows, s.slow_epoch_windows)
        calls = structure.learn_edges(window_traces, kept, window, whole)
        missing, stopped = structure.findings(calls, accs, traces, touched, window)
        own, abrupt = structure.own_findings()
        findings: dict[Key, list[Finding]] = {}
        learning = self._windows_closed <= s.learn_windows
        # keys in a run of quiet windows at a drop's level, significant yet or not: a caller
        # that is as quiet explains its callees' drops (a bursty one takes longer to show it)
        quiet: set[Key] = set()
        # every key with a baseline or spans, in the order they came (not a set's: the order
        # of findings decides ties, and must not depend on the hash seed)
        # (the window's new keys were given stats before the call-graph pass, above)
        for key, stats in list(self._stats.items()):
            acc = accs.get(key)
            found = stats.judge(acc, stats.windows >= s.warmup_windows, s)
            found += missing.get(key, ())
            if (high := own.get(key)) is not None:
                found.append(high)
            if (ended := abrupt.get(key)) is not None:
                found.append(ended)
            if acc is not None and acc.signatures:
                found += self._new_errors.findings(key, acc, window, learning)
            if (made := calls.get(key)) is not None and made[1]:
                early = learning or stats.windows < s.warmup_windows
                for finding, child in self._new_errors.new_calls(key, *made, window, early):
                    finding.examples = calling(traces, key, child, touched, window)
                    found.append(finding)
            if found:
                findings[key] = found
            if stats.quiet(s):
                quiet.add(key)
            stats.learn(acc, bool(found), s)
        for key, finding in self._retries.findings(window_traces, accs):
            findings.setdefault(key, []).append(finding)
        # the window's, for the incidents' measures below
        own_times, ended_rates = structure.own, structure.abrupt_rates
        structure.learn_calls(calls, findings)
        # A key at a span or two a window shows its errors in some windows only: while its
        # run of errors that gave a finding lasts, it still fails now, for the drops below it.
        # Likewise a caller whose traffic drop is open and still quiet explains the drops
        # below it that show later (at a few spans a window, or sampled, each takes its time).
        failing: dict[Key, Operation] = {}
        quiet_roots: dict[Key, Operation] = {}
        for o in self._incidents.open.values():
            dropped = o.incident.pattern is Pattern.TRAFFIC_DROP
            for key in o.keys:
                if (known := self._stats.get(key)) is None:
                    continue
                if known.error_run[3]:
                    failing[key] = o.incident.root_cause
                if dropped and known.low_streak[1]:
                    quiet_roots[key] = o.incident.root_cause
        groups = group_findings(
            findings,
            accs,
            stopped,
            self._parents,
            partial(self._root_cause.find, traces),
            failing,
            quiet,
            quiet_roots,
        )
        total = sum(a.count for a in accs.values())
        events = self._incidents.update(
            groups, window, total, accs, traces, own_times, ended_rates, self._running
        )
        expire(traces, window, s.trace_windows)
        return events

    def _running(self, key: Key) -> bool:
        """Whether the key is in a run of suspicious windows: of errors, slow spans, high own
        time, spans far past the usual, spans ending on an answer, a usual call missed, or
        retries."""
        stats = self._stats.get(key)
        if stats is not None and (stats.error_run[2] or stats.slow_run[2] or stats.far_run[2]):
            return True
        own = self._structure.own_baselines.get(key)
        if own is not None and (own.high_run[2] or own.ended_run[2]):
            return True
        shares = self._structure.call_shares.get(key)
        if shares is not None and shares.runs:  # (only runs under way are kept)
            return True
        return bool(self._retries.runs.get(key, (0, 0, 0))[2])

    @property
    def open_incidents(self) -> list[Incident]:
        return [o.incident for o in self._incidents.open.values()]

    @property
    def tracked_keys(self) -> int:
        return len(self._keys)
