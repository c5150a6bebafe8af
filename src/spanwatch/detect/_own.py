"""Own time: a handler span's time outside its calls. A CPU-starved or stalled service spends
it; a slow callee, or the network in front of one, does not (see Settings.own_factor).

And how a handler span ends: its *tail*, the time from its last call's answer to its own end.
A handler that does work after its calls and now ends as the answer comes (a tail under
answer_gap of its usual one) failed on reading it, whether or not a status says so: a wrong
result of the callee's, an exception swallowed (see :func:`abrupt_findings`). Work before its
calls growing (a latency fault) leaves the tail as it was."""

from __future__ import annotations

from collections.abc import Iterable
from statistics import median

from spanwatch.model import SpanKind

from ._keys import Key
from ._settings import Settings
from ._stats import EXAMPLES, NO_RUN, RUN_WINDOWS, Family, Finding, KeyStats, Run, judged

# a window's own times of a key's spans: (own time ns, trace id, span id, tail ns (its end
# less its last call's; negative when that call outlived it), the last call's key) of each
OwnSpan = tuple[int, bytes, bytes, int, Key]
OwnTimes = dict[Key, list[OwnSpan]]


_CLIENT = int(SpanKind.CLIENT)
# the signature of an abrupt_end_rate finding
ABRUPT = "ends as its last call answers (no work of its own after it)"


def own_time(start: int, end: int, calls: Iterable[tuple[int, int]]) -> int:
    """The time of [start, end] outside the union of the calls' (start, end) intervals (calls
    made in parallel count once; a call that outlived the span counts to its end)."""
    own, at = end - start, start
    for call_start, call_end in sorted(calls):
        call_start, call_end = max(call_start, at), min(call_end, end)
        if call_end > call_start:
            own -= call_end - call_start
            at = call_end
    return own


def own_bar(median_ns: float, settings: Settings) -> float:
    """The own time (ns) above which a span's is high, for a learned median own time."""
    return max(settings.own_factor * median_ns, median_ns + settings.min_latency_delta_ms * 1e6)


class OwnBaseline:
    """One key's own time: its windows' median, and the share of its spans over the bar
    (decayed counts, as the error rate)."""

    __slots__ = (
        "abrupt",
        "ended_run",
        "high",
        "high_run",
        "median",
        "rising",
        "spans",
        "tail",
        "windows",
    )

    def __init__(self) -> None:
        self.median = -1.0  # none learned yet
        self.high = 0.0
        self.tail = -1.0  # the windows' median tail, as the median (none learned yet)
        self.abrupt = 0.0  # spans that ended as their last call answered, as ``high``
        self.spans = 0.0
        self.windows = 0  # windows learned (to warmup_windows: a small int, no object of its own)
        # windows in a row whose median was over drift_factor x the learned one but not over
        # the bar: a creep crosses the one long before the other, a step crosses both at once
        self.rising = 0
        # runs of suspicious windows (see KeyStats.judge): a key at a span or two a window
        # shows a fault in none alone
        self.high_run: Run = NO_RUN
        self.ended_run: Run = NO_RUN

    def bar(self, settings: Settings) -> float:
        """The own time (ns) above which a span's is high."""
        return own_bar(self.median, settings)

    def abrupt_bar(self, settings: Settings) -> float:
        """The tail (ns) at or below which a span ended as its last call answered; -1 before
        a tail is learned (none does)."""
        return settings.answer_gap * self.tail if self.tail > 0 else -1.0

    def learn(self, own: list[OwnSpan], mid: float, settings: Settings) -> None:
        """Fold in a window's own times (of :data:`OwnTimes`) and their median ``mid``; not
        the second and later windows of a run (a fault that shows a span at a time must not
        raise the baseline it is judged against)."""
        if self.high_run[2] >= RUN_WINDOWS or self.ended_run[2] >= RUN_WINDOWS:
            return
        if self.median < 0:
            self.median = mid
        else:
            self.median += settings.slow_alpha * (mid - self.median)
        bar = self.bar(settings)
        keep = 1 - settings.slow_alpha
        self.high = keep * self.high + sum(1 for span in own if span[0] > bar)
        self.abrupt = keep * self.abrupt + len(abrupt(own, self.abrupt_bar(settings)))
        tails = [span[3] for span in own if span[3] >= 0]
        if tails:
            tail = median(tails)
            self.tail = (
                tail if self.tail < 0 else self.tail + settings.slow_alpha * (tail - self.tail)
            )
        self.spans = keep * self.spans + len(own)
        self.windows = min(self.windows + 1, settings.warmup_windows)


def own_findings(
    times: OwnTimes,
    medians: dict[Key, float],
    baselines: dict[Key, OwnBaseline],
    stats: dict[Key, KeyStats],
    settings: Settings,
) -> dict[Key, Finding]:
    """Keys past their warm-up with more spans over the own time bar this window than their
    healthy windows held: a latency finding each, with the highest as examples (``medians``:
    each key's median own time this window)."""
    s = settings
    out: dict[Key, Finding] = {}
    for key, own in times.items():
        base = baselines.get(key)
        if base is None or base.spans < s.min_latency_samples or base.windows < s.warmup_windows:
            continue
        learned = stats.get(key)
        if learned is None or learned.windows < s.warmup_windows:
            continue
        mid = medians[key]
        bar = base.bar(s)
        if mid <= s.drift_factor * base.median:
            base.rising = 0
        elif mid <= bar:
            base.rising += 1
        high = [span for span in own if span[0] > bar]
        p0 = max(s.min_error_rate, base.high / base.spans)
        base.high_run, count, _ = judged(base.high_run, len(high), len(own), p0, s.min_slow, s)
        if count:
            high.sort(reverse=True)
            # severity reads how much slower the key's spans got: the own time's growth
            # against their whole median (8x of 1 ms in a 25 ms span is a fifth slower)
            whole = max(learned.quantiles()[0], base.median, 1.0)
            out[key] = Finding(
                Family.LATENCY,
                "own_time_ms",
                mid / 1e6,
                base.median / 1e6,
                "ms",
                (whole + max(0.0, mid - base.median)) / whole,
                count,
                # a creep: the typical span moved part way (its median over drift_factor x
                # the learned one, not yet over the bar: a step takes it over at once, and a
                # step of a few spans leaves it), or did for drift_recent windows before
                drift=base.rising > s.drift_recent or (base.rising > 0 and mid <= bar),
                examples=tuple((span[1], span[2]) for span in high[:EXAMPLES]),
            )
    return out


def abrupt_findings(
    times: OwnTimes,
    baselines: dict[Key, OwnBaseline],
    stats: dict[Key, KeyStats],
    settings: Settings,
) -> tuple[dict[Key, Finding], dict[Key, tuple[int, int]]]:
    """Keys past their warm-up whose spans ended as their last call answered (a tail under
    answer_gap of their usual one) far more often this window than their healthy windows
    did: a new error each (the spans failed on what they read, told or not), with those spans
    as examples; and (such spans, spans) of each key judged. A key whose spans always end on
    an answer (a proxy, work done before its calls) has learned so, and shows nothing."""
    s = settings
    out: dict[Key, Finding] = {}
    rates: dict[Key, tuple[int, int]] = {}
    for key, own in times.items():
        base = baselines.get(key)
        if base is None or base.windows < s.warmup_windows or base.tail <= 0:
            continue
        learned = stats.get(key)
        if learned is None or learned.windows < s.warmup_windows:
            continue
        ended = abrupt(own, base.abrupt_bar(s))
        k, n = len(ended), len(own)
        rates[key] = (k, n)
        # as the missing calls: a share never seen is at most one in the spans learned
        p0 = max(s.min_error_rate, 1 / (base.spans + 1), base.abrupt / base.spans)
        base.ended_run, count, share = judged(base.ended_run, k, n, p0, s.min_errors, s)
        if count:
            out[key] = Finding(
                Family.NEW_ERROR,
                "abrupt_end_rate",
                share,
                p0,
                "ratio",
                share / p0,
                count,
                signature=ABRUPT,
                # the smallest span ids, whatever order the traces came in
                examples=tuple(
                    (span[1], span[2]) for span in sorted(ended, key=_by_span_id)[:EXAMPLES]
                ),
            )
    return out, rates


def _by_span_id(span: OwnSpan) -> tuple[bytes, bytes]:
    return span[2], span[1]


def abrupt(own: list[OwnSpan], bar: float) -> list[OwnSpan]:
    """The spans whose last call was a client's and that ended within ``bar`` of its answer."""
    return [span for span in own if 0 <= span[3] <= bar and span[4].kind == _CLIENT]
