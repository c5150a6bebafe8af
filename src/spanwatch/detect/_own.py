"""Own time: a handler span's time outside its calls. A CPU-starved or stalled service spends
it; a slow callee, or the network in front of one, does not (see Settings.own_factor)."""

from __future__ import annotations

from collections.abc import Iterable

from ._keys import Key
from ._settings import Settings
from ._stats import EXAMPLES, Family, Finding, KeyStats, chernoff_upper

# a window's own times of a key's spans: (own time ns, trace id, span id) of each
OwnTimes = dict[Key, list[tuple[int, bytes, bytes]]]


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

    __slots__ = ("high", "median", "rising", "spans", "windows")

    def __init__(self) -> None:
        self.median = -1.0  # none learned yet
        self.high = 0.0
        self.spans = 0.0
        self.windows = 0  # windows learned (to warmup_windows: a small int, no object of its own)
        # windows in a row whose median was over drift_factor x the learned one but not over
        # the bar: a creep crosses the one long before the other, a step crosses both at once
        self.rising = 0

    def bar(self, settings: Settings) -> float:
        """The own time (ns) above which a span's is high."""
        return own_bar(self.median, settings)

    def learn(self, own: list[tuple[int, bytes, bytes]], mid: float, settings: Settings) -> None:
        """Fold in a window's own times (of :data:`OwnTimes`) and their median ``mid``."""
        if self.median < 0:
            self.median = mid
        else:
            self.median += settings.slow_alpha * (mid - self.median)
        bar = self.bar(settings)
        keep = 1 - settings.slow_alpha
        self.high = keep * self.high + sum(1 for span in own if span[0] > bar)
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
        k, n = len(high), len(own)
        p0 = max(s.min_error_rate, base.high / base.spans)
        if (
            k >= s.min_slow
            and k / n >= max(s.min_error_share, s.error_factor * p0)
            and chernoff_upper(k, n, p0) < s.p_value
        ):
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
                k,
                # a creep: the typical span moved part way (its median over drift_factor x
                # the learned one, not yet over the bar: a step takes it over at once, and a
                # step of a few spans leaves it), or did for drift_recent windows before
                drift=base.rising > s.drift_recent or (base.rising > 0 and mid <= bar),
                examples=tuple((trace_id, span_id) for _, trace_id, span_id in high[:EXAMPLES]),
            )
    return out
