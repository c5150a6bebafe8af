"""Event time for a fleet of clocks: which spans move the fleet's time, which are corrected,
which sources are waited for, and when time itself starts over. Pure: span times in, decisions
out; the wall clock is never read.

A *source* is one emitter of spans, whose clock is its own: a service instance (the batch's
``source`` column: service, scope and ``service.instance.id``, else ``host.name``).

- **The fleet's time** (``front``) is the latest span end admitted. Only spans within
  ``[front - max_lag, front + max_ahead]`` are on the fleet's clock; nothing else moves it. A
  batch that lies wholly within those bounds (nearly all of them) takes the fast path: two
  comparisons, and none of what follows.
- **A source whose clock is wrong** (its spans' median end outside the bounds) is given an
  offset that puts its median at the fleet's time, and its spans are judged on the corrected
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
    _sources: OrderedDict[str, _Source] = field(default_factory=OrderedDict)
    _lagging: dict[str, _Source] = field(default_factory=dict)
    _held: list[SpanBatch] = field(default_factory=list)
    _held_spans: int = 0

    # -- what the detector asks ------------------------------------------------------------

    def admit(self, batch: SpanBatch) -> list[Admitted]:
        ends = batch.end_ns
        if not ends:
            return []
        if not self.front:
            self.front = sorted(ends)[len(ends) // 2]
        lo, hi = min(ends), max(ends)
        if not self._held and self._in_bounds(lo) and self._in_bounds(hi):
            self._track_lag(batch, lo, hi)
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

    def advance(self, watermark_ns: int) -> None:
        self.front = max(self.front, watermark_ns)

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

    # -- the fast path: on-time batches ----------------------------------------------------

    def _in_bounds(self, t: int) -> bool:
        return self.front - self.max_lag_ns <= t <= self.front + self.max_ahead_ns

    def _track_lag(self, batch: SpanBatch, lo: int, hi: int) -> None:
        """Note which sources lag behind the fleet, and which caught up."""
        front = self.front = max(self.front, hi)
        if lo >= front - self.lateness_ns:
            if self._lagging:  # every source of the batch is on time
                for src in dict.fromkeys(batch.source):
                    self._lagging.pop(src, None)
            return
        ends = batch.end_ns
        for src, rows in filing.group(batch.source, 0, len(ends)).items():
            latest = max(take(ends, rows))
            if front - latest > self.lateness_ns:
                state = self._source(src, batch.service[rows[0]])
                state.front_ns, state.seen_at_ns = latest, front
                self._lagging[src] = state
            else:
                self._lagging.pop(src, None)

    def _source(self, src: str, service: str) -> _Source:
        state = self._sources.get(src)
        if state is None:
            state = self._sources[src] = _Source(service)
            while len(self._sources) > self.max_sources:
                old, _ = self._sources.popitem(last=False)
                self._lagging.pop(old, None)
        else:
            self._sources.move_to_end(src)
        return state

    # -- the slow path: spans off the fleet's clock ----------------------------------------

    def _slow(self, batch: SpanBatch) -> list[Admitted]:
        ends = batch.end_ns
        groups = filing.group(batch.source, 0, len(ends))
        medians = _medians(ends, groups)
        on_clock = [
            src
            for src, m in medians.items()
            if self._in_bounds(m) or self._in_bounds(m + self._offset(src))
        ]
        if not on_clock:  # nothing here on the fleet's clock: wrong clocks, or time moved
            self._held.append(batch)
            self._held_spans += len(ends)
            return self._maybe_new_epoch()
        out = [Admitted(self._correct(held)) for held in self._release()]
        out.append(Admitted(self._correct(batch, groups, medians)))
        return out

    def _offset(self, src: str) -> int:
        state = self._sources.get(src)
        return state.offset_ns if state is not None else 0

    def _release(self) -> list[SpanBatch]:
        held, self._held, self._held_spans = self._held, [], 0
        return held

    def _maybe_new_epoch(self) -> list[Admitted]:
        held = self._held
        times = [t for b in held for t in (min(b.end_ns), max(b.end_ns))]
        spread = max(times) - min(times)
        if not (
            (len(held) >= 2 and spread >= self.epoch_after_ns) or self._held_spans >= self.max_held
        ):
            return []
        batches = self._release()
        old = self.front
        self.start_epoch()
        self.front = sorted(batches[0].end_ns)[len(batches[0].end_ns) // 2]
        self.notes.append(
            ClockNote("epoch", "", "", sum(len(b) for b in batches), self.front - old)
        )
        out: list[Admitted] = []
        for b in batches:  # on the new clock now, but each may still hold a wrong one
            lo, hi = min(b.end_ns), max(b.end_ns)
            if self._in_bounds(lo) and self._in_bounds(hi):
                self._track_lag(b, lo, hi)
                out.append(Admitted(b))
            else:
                out.append(Admitted(self._correct(b)))
        out[0].epoch = BACKWARD if self.front < old else FORWARD
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
            medians = {
                src: sorted(take(ends, rows))[len(rows) // 2] for src, rows in groups.items()
            }
        shift: dict[int, int] = {}  # row -> ns added to its times
        for src, rows in groups.items():
            service = batch.service[rows[0]]
            m = medians[src]
            state = self._source(src, service)
            if self._in_bounds(m):
                state.offset_ns = 0
            elif not self._in_bounds(m + state.offset_ns):
                state.offset_ns = self.front - m
            offset = state.offset_ns
            state.seen_at_ns = self.front
            if offset:
                direction = AHEAD if offset < 0 else BEHIND
                self.corrected[(service, direction)] += len(rows)
                self.notes.append(ClockNote(direction, src, service, len(rows), -offset))
            wild = 0
            for row in rows:
                moved = ends[row] + offset
                if self._in_bounds(moved):
                    if offset:
                        shift[row] = offset
                else:  # one wild span: onto its source's median
                    shift[row] = m + offset - ends[row]
                    wild += 1
                    direction = AHEAD if shift[row] < 0 else BEHIND
                    self.corrected[(service, direction)] += 1
            if wild and not offset:
                self.notes.append(
                    ClockNote("wild", src, service, wild, max(ends[r] for r in rows) - m)
                )
        if not shift:
            self._track_lag(batch, min(ends), max(ends))
            return batch
        columns = batch.columns()
        new_ends, new_starts = list(ends), list(starts)
        for row, delta in shift.items():
            new_ends[row] += delta
            new_starts[row] += delta
        columns["end_ns"], columns["start_ns"] = new_ends, new_starts
        fixed = SpanBatch(**columns)
        self._track_lag(fixed, min(new_ends), max(new_ends))
        return fixed


def _medians(ends: list[int], groups: dict[str, list[int]]) -> dict[str, int]:
    """Each source's median span end (the upper one of an even count)."""
    return {src: sorted(take(ends, rows))[len(rows) // 2] for src, rows in groups.items()}
