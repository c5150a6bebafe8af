"""Event time for a fleet of clocks: which spans move the fleet's time, which are corrected,
which sources are waited for, and when time itself starts over. Pure: span times in, decisions
out; the wall clock is never read.

A *source* is one emitter of spans, whose clock is its own: a service instance (the batch's
``source`` column: service, scope and ``service.instance.id``, else ``host.name``).

- **The fleet's time** (``front``) is the latest span end admitted. Only spans within
  ``[front - max_lag, front + max_ahead]`` are on the fleet's clock; nothing else moves it,
  and a source's first batch moves it by ``lateness`` at most. A batch that lies wholly within
  those bounds (nearly all of them) takes the fast path: its bounds checked and its sources
  noted in one pass, and none of what follows. A batch that runs on past ``max_ahead`` (a
  fast replay) is judged as a stream: each span within ``max_ahead`` of the one before.
- **A source whose clock is wrong** (its spans' median end outside the bounds) is given an
  offset that puts its latest span at the fleet's time, and its spans are judged on the corrected
  time; the offset stays with the source until its own times are back within bounds. One wild
  span of a source whose other spans are on time is moved to its source's median end. Every
  corrected span is counted (by service and direction) and noted for the log.
- **A lagging source** (on the fleet's clock, but more than ``lateness`` behind, as behind a slow
  collector) is waited for: windows close no later than its latest span end (``hold``) while it
  keeps sending (within ``live_ns`` of fleet time since last seen), so its spans are judged in
  their own windows with their traces, only later by its lag.
- **Time that starts over.** When whole batches keep arriving off the fleet's clock with no
  on-time traffic between them (a second replay of older traffic, a restart on a snapshot
  followed by other traffic, a recording with a long gap), they are held back, and once they
  span ``epoch_after_ns`` of their own time over two or more batches (or fill ``max_held``
  spans), the fleet's time starts a new *epoch* at theirs: the detector resolves what was
  open and closes the old time's windows. Backward (older traffic: a replay, a second
  simulation) it also forgets what it learned, and judges the traffic as a fresh detector
  would; forward (a restart after downtime, a gap in a recording) its baselines stay. An
  on-time batch in between shows the held ones were a few wrong clocks after all: they are
  corrected as above.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

from spanwatch.model import SpanBatch

from . import _filing as filing
from ._filing import take

AHEAD, BEHIND = "ahead", "behind"
BACKWARD, FORWARD = "backward", "forward"


class ClockNote(NamedTuple):
    """Something the daemon logs (at most once a minute per source) and counts."""

    kind: str  # ahead | behind (spans corrected), late (dropped), epoch (time started over)
    source: str
    service: str
    spans: int
    skew_ns: int  # how far the source's clock was from the fleet's (positive: ahead)


@dataclass(slots=True)
class _Source:
    service: str
    offset_ns: int = 0  # added to this source's span times
    front_ns: int = 0  # its latest span end (corrected), while it lags
    seen_at_ns: int = 0  # the fleet's time when it last sent spans


@dataclass(slots=True)
class Admitted:
    """A batch to file (its times corrected where needed). With ``epoch`` (BACKWARD or
    FORWARD), time starts over before it."""

    batch: SpanBatch
    epoch: str = ""


MAX_NOTES = 10_000  # notes kept until the daemon drains them (a library user may never)


@dataclass(slots=True)
class EventClock:
    max_lag_ns: int
    max_ahead_ns: int
    lateness_ns: int
    epoch_after_ns: int
    live_ns: int
    max_held: int = 200_000
    max_sources: int = 10_000
    front: int = 0
    epochs: int = 0
    corrected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, direction)
    notes: list[ClockNote] = field(default_factory=list)
    # every source seen (bounded, least recently seen first): a source's first batch may not
    # lead the fleet's time, and the sources seen lately are who must agree that time moved
    _sources: OrderedDict[str, _Source] = field(default_factory=OrderedDict)
    _lagging: dict[str, _Source] = field(default_factory=dict)
    _held: list[SpanBatch] = field(default_factory=list)
    _held_spans: int = 0
    _held_since: int = 0  # the fleet's time when the first held batch came
    _upper: int = 0  # the latest on-clock end for the batch being judged (0: front + max_ahead)

    # -- what the detector asks ------------------------------------------------------------

    def admit(self, batch: SpanBatch) -> list[Admitted]:
        ends = batch.end_ns
        if not ends:
            return []
        if not self.front:
            self.front = sorted(ends)[len(ends) // 2]
        lo, hi = min(ends), max(ends)
        if not self._held and self._in_bounds(lo) and self._in_bounds(hi):
            self._track(batch, lo, hi)
            return [Admitted(batch)]
        return self._slow(batch)

    def hold(self) -> int | None:
        """The latest time windows may close at while lagging sources are waited for."""
        if not self._lagging:
            return None
        quiet = [k for k, s in self._lagging.items() if self.front - s.seen_at_ns > self.live_ns]
        for src in quiet:  # gone quiet: no longer waited for
            del self._lagging[src]
        return min((s.front_ns for s in self._lagging.values()), default=None)

    def advance(self, watermark_ns: int) -> list[Admitted]:
        """Event time moves on without spans; batches held for ``live_ns`` of it with nothing
        on time to tell them by are judged as wrong clocks (corrected) rather than kept."""
        self.front = max(self.front, watermark_ns)
        if self._held and self.front - self._held_since >= self.live_ns:
            return [Admitted(self._correct(held)) for held in self._release()]
        return []

    @property
    def lagging(self) -> dict[str, int]:
        """Each source waited for now, and how far behind the fleet it is (ns)."""
        return {src: max(0, self.front - s.front_ns) for src, s in self._lagging.items()}

    @property
    def held_spans(self) -> int:
        return self._held_spans

    def start_epoch(self) -> None:
        self.epochs += 1
        self.front = 0
        self._sources.clear()
        self._lagging.clear()

    def note(self, note: ClockNote) -> None:
        if len(self.notes) >= MAX_NOTES:
            del self.notes[: MAX_NOTES // 2]
        self.notes.append(note)

    # -- the fast path: on-time batches ----------------------------------------------------

    def _in_bounds(self, t: int) -> bool:
        upper = self._upper or self.front + self.max_ahead_ns
        return self.front - self.max_lag_ns <= t <= upper

    def _track(self, batch: SpanBatch, lo: int, hi: int) -> None:
        """Move the fleet's time on, and note which sources lag behind it and which caught
        up. A source's first batch leads the fleet by ``lateness`` at most: one new emitter
        (a browser, a host with a clock a little ahead) cannot drag everyone's time along."""
        sources = self._sources
        distinct = dict.fromkeys(batch.source)
        new = [src for src in distinct if src not in sources]
        front = self.front
        per_source: dict[str, list[int]] | None = None
        if new and hi > front + self.lateness_ns:
            per_source = filing.group(batch.source, 0, len(batch.end_ns))
            ends = batch.end_ns
            hi = max(
                (
                    min(latest, front + self.lateness_ns) if src in new else latest
                    for src, rows in per_source.items()
                    for latest in (max(take(ends, rows)),)
                ),
                default=front,
            )
        front = self.front = max(front, hi)
        service = batch.service
        if new:
            if per_source is None:
                per_source = filing.group(batch.source, 0, len(batch.end_ns))
            for src in new:
                self._source(src, service[per_source[src][0]])
        for src in distinct:
            state = sources[src]
            sources.move_to_end(src)
            state.seen_at_ns = front
        if lo >= front - self.lateness_ns:
            if self._lagging:  # every source of the batch is on time
                for src in distinct:
                    self._lagging.pop(src, None)
            return
        ends = batch.end_ns
        if per_source is None:
            per_source = filing.group(batch.source, 0, len(ends))
        for src, rows in per_source.items():
            latest = max(take(ends, rows))
            if front - latest > self.lateness_ns:
                state = sources[src]
                state.front_ns = latest
                self._lagging[src] = state
            else:
                self._lagging.pop(src, None)

    def _source(self, src: str, service: str) -> _Source:
        state = self._sources.get(src)
        if state is None:
            state = self._sources[src] = _Source(service, seen_at_ns=self.front)
            while len(self._sources) > self.max_sources:
                old, _ = self._sources.popitem(last=False)
                self._lagging.pop(old, None)
        else:
            self._sources.move_to_end(src)
        return state

    # -- the slow path: spans off the fleet's clock ----------------------------------------

    def _chain(self, ends: list[int]) -> int:
        """The latest end on the fleet's clock for a batch that runs on past ``max_ahead``:
        its spans in end order, each within ``max_ahead`` of the one before (a batch covering
        minutes of a replay is on the clock; a span minutes past the rest is not)."""
        upper = self.front + self.max_ahead_ns
        for end in sorted(ends):
            if end > upper:
                break
            upper = max(upper, end + self.max_ahead_ns)
        return upper

    def _slow(self, batch: SpanBatch) -> list[Admitted]:
        ends = batch.end_ns
        self._upper = self._chain(ends)
        try:
            groups = filing.group(batch.source, 0, len(ends))
            medians = _medians(ends, groups)
            on_clock = [
                src
                for src, m in medians.items()
                if self._in_bounds(m) or self._in_bounds(m + self._offset(src))
            ]
            if not on_clock:  # nothing here on the fleet's clock: wrong clocks, or time moved
                if not self._held:
                    self._held_since = self.front
                self._held.append(batch)
                self._held_spans += len(ends)
                return self._maybe_new_epoch()
            out = [Admitted(self._correct(held)) for held in self._release()]
            self._upper = self._chain(ends)
            out.append(Admitted(self._correct(batch, groups, medians)))
            return out
        finally:
            self._upper = 0

    def _offset(self, src: str) -> int:
        state = self._sources.get(src)
        return state.offset_ns if state is not None else 0

    def _release(self) -> list[SpanBatch]:
        held, self._held, self._held_spans = self._held, [], 0
        return held

    def _maybe_new_epoch(self) -> list[Admitted]:
        """Whether the held batches show that time itself moved: they agree with each other
        (their medians a chain within ``max_ahead``), they span ``epoch_after`` of their own
        time over two or more batches, and they come from at least half the sources seen on
        time lately (one wrong clock alone never moves everyone's time)."""
        held = self._held
        medians = sorted(sorted(b.end_ns)[len(b.end_ns) // 2] for b in held)
        agree = all(b - a <= self.max_ahead_ns for a, b in pairwise(medians))
        times = [t for b in held for t in (min(b.end_ns), max(b.end_ns))]
        spread = max(times) - min(times)
        held_sources = {src for b in held for src in dict.fromkeys(b.source)}
        recent = [
            src
            for src, state in self._sources.items()
            if self._held_since - state.seen_at_ns <= self.live_ns and state.offset_ns == 0
        ]
        enough = len(held_sources) * 2 >= len(recent)
        if not (agree and enough):
            if self._held_spans >= self.max_held:  # bounded: judge them as wrong clocks
                return [Admitted(self._correct(b)) for b in self._release()]
            return []
        if not (
            (len(held) >= 2 and spread >= self.epoch_after_ns) or self._held_spans >= self.max_held
        ):
            return []
        batches = self._release()
        old = self.front
        self.start_epoch()
        self.front = medians[len(medians) // 2] if len(batches) > 2 else medians[0]
        direction = BACKWARD if self.front < old else FORWARD
        self.note(ClockNote("epoch", direction, "", sum(len(b) for b in batches), self.front - old))
        out: list[Admitted] = []
        for b in batches:  # on the new clock now, but each may still hold a wrong one
            lo, hi = min(b.end_ns), max(b.end_ns)
            if self._in_bounds(lo) and self._in_bounds(hi):
                self._track(b, lo, hi)
                out.append(Admitted(b))
            else:
                self._upper = self._chain(b.end_ns)
                out.append(Admitted(self._correct(b)))
                self._upper = 0
        out[0].epoch = direction
        return out

    def _correct(
        self,
        batch: SpanBatch,
        groups: dict[str, list[int]] | None = None,
        medians: dict[str, int] | None = None,
    ) -> SpanBatch:
        """The batch with every off-clock span moved onto the fleet's clock."""
        ends, starts = batch.end_ns, batch.start_ns
        if groups is None:
            groups = filing.group(batch.source, 0, len(ends))
        if medians is None:
            medians = _medians(ends, groups)
        shift: dict[int, int] = {}  # row -> ns added to its times
        for src, rows in groups.items():
            service = batch.service[rows[0]]
            m = medians[src]
            state = self._source(src, service)
            if self._in_bounds(m):
                state.offset_ns = 0
            elif not self._in_bounds(m + state.offset_ns):
                # its latest span at the fleet's time: none of it ahead of everyone
                state.offset_ns = self.front - max(take(ends, rows))
            offset = state.offset_ns
            if offset:
                direction = AHEAD if offset < 0 else BEHIND
                self.corrected[(service, direction)] += len(rows)
                self.note(ClockNote(direction, src, service, len(rows), -offset))
            wild = 0
            for row in rows:
                moved = ends[row] + offset
                if self._in_bounds(moved):
                    if offset:
                        shift[row] = offset
                else:  # one wild span: onto its source's median
                    shift[row] = m + offset - ends[row]
                    wild += 1
                    if not offset:  # (with an offset, the source's count has it already)
                        direction = AHEAD if shift[row] < 0 else BEHIND
                        self.corrected[(service, direction)] += 1
            if wild and not offset:
                self.note(ClockNote("wild", src, service, wild, max(ends[r] for r in rows) - m))
        if not shift:
            self._track(batch, min(ends), max(ends))
            return batch
        columns = batch.columns()
        new_ends, new_starts = list(ends), list(starts)
        for row, delta in shift.items():
            new_ends[row] += delta
            new_starts[row] += delta
        columns["end_ns"], columns["start_ns"] = new_ends, new_starts
        fixed = SpanBatch(**columns)
        self._track(fixed, min(new_ends), max(new_ends))
        return fixed


def _medians(ends: list[int], groups: dict[str, list[int]]) -> dict[str, int]:
    """Each source's median span end (the upper one of an even count)."""
    return {src: sorted(take(ends, rows))[len(rows) // 2] for src, rows in groups.items()}
