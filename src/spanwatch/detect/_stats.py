"""Per-key window statistics, baselines and the significance tests on them.

Baselines learn only from windows that were not judged anomalous, so a fault never becomes the
new normal while it lasts. Rates follow slow exponentially weighted averages (ordinary daily
swings are slow next to a 10-second window); latency lives in DDSketch quantile sketches
rotated in epochs, so the baseline follows gradual change without forgetting at once.
"""

from __future__ import annotations

import heapq
import math
import operator
import struct
from array import array
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate, compress

from ddsketch.mapping import LogarithmicMapping

from ._keys import Key
from ._settings import Settings

SKETCH_ACCURACY = 0.05
RESERVOIR = 256
SLOWEST = 8
# example spans an incident names (and a window's spans show): enough to look at, few to send
EXAMPLES = 5
# failed spans a window keeps as examples, each a root-cause walk: enough for a majority vote
ERROR_EXAMPLES = 20
# DDSketch's logarithmic mapping: a latency's bucket, and the value that stands for a bucket
# (within SKETCH_ACCURACY of every latency in it). Each key holds up to four sketches, and
# 100 000 keys are a lot of them: a sketch's counts are whole numbers, kept in one array.
_MAPPING = LogarithmicMapping(SKETCH_ACCURACY)
_COUNTS = "I" if array("I").itemsize >= 4 else "L"
# _MAPPING.key(v) is ceil(log2(v) * this): the mapping's own multiplier, worked out as it does,
# so that a window's durations are bucketed without a method call each (tested equal)
_KEY_SCALE = (1.0 / math.log(_MAPPING.gamma)) * math.log(2)
_CHUNK = 8  # buckets a sketch grows by
# spans a new epoch's sketch holds before it joins the baseline (fewer say little of its
# quantiles): until then the previous epoch alone is the baseline
EPOCH_SPANS = 50
# a run of suspicious windows is evidence from its second window on (one window alone is
# judged by itself)
RUN_WINDOWS = 2
# a run's spans past which its rate is taken as known (a window of more is judged at it too)
RATE_KNOWN_SPANS = 100
# a quiet run's expected spans past one and a half windows' worth: its second window or later
QUIET_RUN = 1.5
# err_windows counts to this at most: past it the weight learned is 1 within 0.2% (and an int
# this small is a shared object, no memory of its own)
ERR_WINDOWS = 255
# a run of quiet windows: (observed, expected) spans over it; of its windows not learned,
# how many, their spans and the sum of the squares of their counts; whether it gave a drop;
# of those windows outside an error run (which learns its own), how many, spans, errors
Streak = tuple[float, float, int, float, float, bool, int, float, float]
NO_STREAK: Streak = (0.0, 0.0, 0, 0.0, 0.0, False, 0, 0.0, 0.0)
# a run of suspicious windows: (hits, spans, windows)
Run = tuple[float, float, int]
NO_RUN: Run = (0.0, 0.0, 0)
# an error run: (errors, spans, windows, whether it gave a finding)
_NO_ERROR_RUN: tuple[float, float, int, bool] = (0.0, 0.0, 0, False)
# a window's sampled span: span id, duration (ns, unsigned), trace id
_RECORD = struct.Struct(">8sQ16s")


def consistent(k: float, n: float, hits: float, spans: float, settings: Settings) -> bool:
    """Whether a window's k of n could come from a run of ``hits`` in ``spans``: P(X <= k) is
    at least run_consistent (a key at one span a window shows no error in most windows of a
    fault in 40% of its spans; a busy key's clean window ends the run). The run's rate is
    known only as well as its spans tell: from a few, X is read against all the rates they
    allow (the posterior predictive under a Jeffreys prior), so one slow span in one does not
    make a run at 100% that the next normal span ends; from many, against their rate."""
    rate = hits / spans
    if k >= rate * n:
        return True
    if spans >= RATE_KNOWN_SPANS or n > RATE_KNOWN_SPANS:
        if rate >= 1.0:
            return False
        return chernoff_upper(n - k, n, 1 - rate) >= settings.run_consistent
    return beta_binomial_cdf(int(k), int(n), hits + 0.5, spans - hits + 0.5) >= (
        settings.run_consistent
    )


def beta_binomial_cdf(k: int, n: int, a: float, b: float) -> float:
    """P(X <= k) for X ~ BetaBinomial(n, a, b): k of n at a rate drawn from Beta(a, b)."""
    lg = math.lgamma
    base = lg(n + 1) + lg(a + b) - lg(a) - lg(b) - lg(n + a + b)
    return min(
        1.0,
        sum(
            math.exp(base - lg(j + 1) - lg(n - j + 1) + lg(j + a) + lg(n - j + b))
            for j in range(k + 1)
        ),
    )


def chernoff_upper(k: float, n: float, p: float) -> float:
    """An upper bound on P(X ≥ k) for X ~ Binomial(n, p); 1 when k/n ≤ p."""
    if n <= 0 or k <= 0:
        return 1.0
    q = k / n
    if q <= p:
        return 1.0
    if q >= 1.0:
        return float(p**n)
    kl = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    return math.exp(-n * kl)


def poisson_lower(observed: float, expected: float) -> float:
    """An upper bound on P(X ≤ observed) for X ~ Poisson(expected); 1 when observed ≥ expected."""
    if observed >= expected:
        return 1.0
    if observed <= 0:
        return math.exp(-expected)
    return math.exp(-expected + observed - observed * math.log(observed / expected))


@dataclass(slots=True)
class WindowAcc:
    """What one key did in one window.

    Samples are chosen by span id (the smallest ids win), not by arrival order, so the same
    spans give the same window whatever order or batching they came in. Each span costs a
    comparison or two: only spans that can still make the sample (or the slowest few) are
    kept, and the kept lists are cut back in bulk when they have doubled. Every key has one of
    these per open window, so error bookkeeping is made only when needed.
    """

    count: int = 0
    errors: int = 0
    # (span id, duration, trace id) records of the smallest span ids seen, packed (32 bytes
    # each, in that order, so the bytes of a record sort as its fields do), up to 2 x
    # RESERVOIR of them before a cut
    sample: bytearray = field(default_factory=bytearray)
    cut: bytes = b"\xff" * 9  # ids at or above it cannot make the sample any more
    # (duration, trace, span) of the slowest, kept apart only once the sample has been cut:
    # until then every span is in the sample
    top: list[tuple[int, bytes, bytes]] | None = None
    slow_cut: int = -1  # durations below it cannot make the slowest 8
    signatures: Counter[str] | None = None
    error_examples: list[tuple[bytes, bytes]] | None = None  # (span, trace), smallest span ids
    tidy: bool = True  # the sample is cut and in order: nothing came since the last cut

    def add(self, duration: int, error_signature: str, trace_id: bytes, span_id: bytes) -> None:
        """One span (``error_signature`` empty unless it failed)."""
        errors = [(error_signature, span_id, trace_id)] if error_signature else ()
        self.add_many([duration], [trace_id], [span_id], errors)

    def add_many(
        self,
        durations: list[int],
        trace_ids: list[bytes],
        span_ids: list[bytes],
        errors: Iterable[tuple[str, bytes, bytes]] = (),
    ) -> None:
        """Spans given column by column (8-byte span ids, 16-byte trace ids), and (signature,
        span id, trace id) of those that failed, in the order they came: the same window as
        adding them one by one. A span that ends before it starts counts as taking no time."""
        if durations and min(durations) < 0:
            durations = [max(d, 0) for d in durations]
        self.count += len(durations)
        top = self.top
        if top is not None:  # the sample has been cut: the slowest are kept apart
            slow_cut = self.slow_cut
            top += [
                (d, t, s)
                for d, t, s in zip(durations, trace_ids, span_ids, strict=True)
                if d >= slow_cut
            ]
            if len(top) >= 2 * SLOWEST:
                top.sort(reverse=True)
                del top[SLOWEST:]
                self.slow_cut = top[-1][0]
        cut = self.cut
        if top is not None:
            kept = list(map(cut.__gt__, span_ids))
            span_ids = list(compress(span_ids, kept))
            durations = list(compress(durations, kept))
            trace_ids = list(compress(trace_ids, kept))
        if span_ids:
            self.sample += b"".join(map(_RECORD.pack, span_ids, durations, trace_ids))
            self.tidy = False
        if len(self.sample) >= 2 * RESERVOIR * _RECORD.size:
            self._cut()
        for signature, span_id, trace_id in errors:
            self.errors += 1
            if self.signatures is None or self.error_examples is None:
                self.signatures, self.error_examples = Counter(), []
            self.signatures[signature] += 1
            _keep_smallest(self.error_examples, (span_id, trace_id), ERROR_EXAMPLES)

    def _cut(self) -> None:
        """Keep the RESERVOIR smallest span ids (and, from the first cut on, the slowest apart)."""
        size = _RECORD.size
        sample = self.sample
        if len(sample) > RESERVOIR * size and self.top is None:  # every span is in the sample
            self.top = self.slowest
            self.slow_cut = self.top[-1][0]
        packed = bytes(sample)
        records = sorted(packed[i : i + size] for i in range(0, len(packed), size))
        del records[RESERVOIR:]
        self.sample = bytearray(b"".join(records))
        self.tidy = True
        if len(records) == RESERVOIR:
            self.cut = records[-1][:8]

    def _sample(self) -> list[tuple[bytes, int, bytes]]:
        """(span id, duration, trace id) of the sample, in span id order."""
        if not self.tidy:
            self._cut()
        return list(_RECORD.iter_unpack(self.sample))

    @property
    def durations(self) -> list[int]:
        return [d for _, d, _ in self._sample()]

    @property
    def slowest(self) -> list[tuple[int, bytes, bytes]]:
        """The 8 slowest spans as (duration, trace id, span id), slowest first."""
        if self.top is not None:
            return sorted(self.top, reverse=True)[:SLOWEST]
        return heapq.nlargest(
            SLOWEST, ((d, trace, span) for span, d, trace in _RECORD.iter_unpack(self.sample))
        )

    def example_ids(self, errors: bool = False, limit: int = EXAMPLES) -> list[tuple[bytes, bytes]]:
        """(trace id, span id) pairs, in span id order: 20 of the errors, or ``limit`` of all
        spans (spans picked by their ids, not by how they went)."""
        if errors:
            return [(trace, span) for span, trace in sorted(self.error_examples or ())]
        return [(trace, span) for span, _, trace in self._sample()[:limit]]


def _keep_smallest(items: list[tuple[bytes, bytes]], item: tuple[bytes, bytes], limit: int) -> None:
    if len(items) < limit:
        items.append(item)
        return
    largest = max(items)
    if item < largest:
        items[items.index(largest)] = item


def extend_run(
    hits: float, spans: float, windows: int, k: int, n: int, most: int
) -> tuple[float, float, int]:
    """A run of suspicious windows with one more: (hits, spans, windows). Past ``most``
    windows it slides rather than starting over (the older windows weigh a window less each
    time), so a fault at one span every few windows keeps its evidence while it lasts."""
    if windows < most:
        return hits + k, spans + n, windows + 1
    keep = (most - 1) / most
    return hits * keep + k, spans * keep + n, most


def carry_run(run: Run, k: int, n: int, floor: float, settings: Settings) -> Run:
    """A run with a window of k hits in n spans: extended when the window is suspicious (k/n
    at least ``floor``) or likely at the run's own rate (see :func:`consistent`), else over;
    over too when the run as a whole falls under the floor."""
    hits, spans, windows = run
    if (k and k / n >= floor) or (windows and consistent(k, n, hits, spans, settings)):
        hits, spans, windows = extend_run(hits, spans, windows, k, n, settings.run_windows)
        return (hits, spans, windows) if hits / spans >= floor else NO_RUN
    return NO_RUN


def judged(
    run: Run, k: int, n: int, p0: float, least: int, settings: Settings
) -> tuple[Run, int, float]:
    """The run carried on with a window of k spans of n over a bar that a share ``p0`` of
    healthy spans passes; and the spans found over it (0: none) and their share: at least
    ``least`` of them, max(min_error_share, error_factor x p0) of the spans and improbable
    under p0, in this window alone or over the run (as a key's errors are; only a window
    that is suspicious itself renews a finding, so a run's evidence does not outlive the
    fault)."""
    s = settings
    floor = max(s.min_error_share, s.error_factor * p0)
    run = carry_run(run, k, n, floor, s)
    if not k or k / n < floor:
        return run, 0, 0.0
    if k >= least and chernoff_upper(k, n, p0) < s.p_value:
        return run, k, k / n
    hits, spans, windows = run
    if windows >= RUN_WINDOWS and hits >= least and chernoff_upper(hits, spans, p0) < s.p_value:
        return run, round(hits), hits / spans
    return run, 0, 0.0


def median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2]) if ordered else 0.0


def bucketed(durations: list[int]) -> tuple[Counter[int], int]:
    """A window's durations as (how many fall in each sketch bucket, how many are zero or
    less): what a sketch learns from them."""
    values = [d for d in durations if d > 0]
    log, ceil, scale = math.log, math.ceil, _KEY_SCALE
    return Counter([ceil(log(v, 2) * scale) for v in values]), len(durations) - len(values)


class Sketch:
    """A DDSketch of non-negative latencies: ddsketch's mapping, counts in an array."""

    __slots__ = ("bins", "count", "offset", "zeros")

    def __init__(self) -> None:
        self.bins = array(_COUNTS)  # count of bucket offset + i
        self.offset = 0
        self.zeros = 0
        self.count = 0

    def learn(self, buckets: Counter[int], zeros: int) -> None:
        if buckets:
            low, high = min(buckets), max(buckets)
            bins = self.bins
            if not bins:
                self.offset = low
            if low < self.offset:
                grow = -((low - self.offset) // _CHUNK) * _CHUNK
                bins[:0] = array(_COUNTS, bytes(grow * bins.itemsize))
                self.offset -= grow
            if high >= self.offset + len(bins):
                grow = -((len(bins) + self.offset - high - 1) // _CHUNK) * _CHUNK
                bins.extend(array(_COUNTS, bytes(grow * bins.itemsize)))
            offset = self.offset
            for bucket, n in buckets.items():
                bins[bucket - offset] += n
            self.count += sum(buckets.values())
        self.zeros += zeros
        self.count += zeros


def quantile(sketches: list[Sketch], q: float) -> float:
    """The q-quantile of the union of ``sketches``, as DDSketch gives it (0 when empty)."""
    count = sum(s.count for s in sketches)
    if not count:
        return 0.0
    rank = q * (count - 1) - sum(s.zeros for s in sketches)
    filled = [s for s in sketches if s.bins]
    if rank < 0 or not filled:
        return 0.0
    offset = min(s.offset for s in filled)
    if len(filled) == 1:
        bins: list[int] | array[int] = filled[0].bins
    else:
        bins = [0] * (max(s.offset + len(s.bins) for s in filled) - offset)
        for s in filled:
            at = s.offset - offset
            bins[at : at + len(s.bins)] = map(operator.add, bins[at : at + len(s.bins)], s.bins)
    # the first bucket whose running count exceeds the rank
    index = bisect_right(list(accumulate(bins)), rank)
    return float(_MAPPING.value(offset + min(index, len(bins) - 1)))


class Sketches:
    """Two DDSketch epochs: the baseline is their union; the older one is dropped each epoch."""

    __slots__ = ("current", "epoch_windows", "previous", "windows")

    def __init__(self, epoch_windows: int) -> None:
        self.current = Sketch()
        self.previous: Sketch | None = None
        self.windows = 0
        self.epoch_windows = epoch_windows

    def learn(self, buckets: tuple[Counter[int], int]) -> None:
        """Add a window's durations, given as :func:`bucketed`."""
        self.current.learn(*buckets)
        self.windows += 1
        if self.windows >= self.epoch_windows:
            self.previous, self.current = self.current, Sketch()
            self.windows = 0

    def count(self) -> float:
        return float(self.current.count + (self.previous.count if self.previous else 0))

    def _baseline(self) -> list[Sketch]:
        """The epochs the baseline is: the current alone at first, then the previous alone
        until the current holds EPOCH_SPANS, then both."""
        if self.previous is None:
            return [self.current]
        if self.current.count < EPOCH_SPANS:
            return [self.previous]
        return [self.previous, self.current]

    def share_above(self, value: float) -> float:
        """The share of the baseline above ``value``."""
        sketches = self._baseline()
        count = sum(s.count for s in sketches)
        if not count or value <= 0:
            return 0.0
        # from the bucket value falls in (some of it is below value: the safe side, the share
        # over-counted by a bucket's width at most)
        bucket = math.ceil(math.log(value, 2) * _KEY_SCALE)
        above = sum(sum(s.bins[max(0, bucket - s.offset) :]) for s in sketches)
        return above / count

    def quantile(self, q: float) -> float:
        return quantile(self._baseline(), q)


class Family(StrEnum):
    """What kind of evidence a finding is: it picks the root-cause walk and the pattern."""

    ERRORS = "errors"
    LATENCY = "latency"
    TRAFFIC = "traffic"
    NEW_ERROR = "new_error"
    RETRY = "retry"


@dataclass(slots=True)
class Finding:
    """One anomaly of one key in one window, before grouping by root cause."""

    family: Family
    metric: str
    observed: float
    baseline: float
    unit: str
    magnitude: float  # how far from normal, >1 (ratio) for severity
    affected: int  # spans showing it
    drift: bool = False  # judged against the slow baseline, as a creep is
    step: bool = False  # a drift that came as a step: a spike (see Settings.drift_step)
    signature: str = ""
    # (trace id, span id) of example spans, where the key's own window cannot name them
    examples: tuple[tuple[bytes, bytes], ...] = ()


class CallShares:
    """What share of one key's spans call each child key (its usual calls), learned as the
    error rate is: decayed counts of spans, and of those with at least one such child."""

    __slots__ = ("calls", "runs", "spans")

    def __init__(self) -> None:
        self.spans = 0.0
        self.calls: dict[Key, float] = {}
        # runs of windows whose spans lack a usual call (see judged), of each call; None
        # while there are none (most keys, most of the time)
        self.runs: dict[Key, Run] | None = None

    def learn(self, n: int, calls: Counter[Key], decay: float, limit: int) -> None:
        """Fold in a window: ``n`` spans, ``calls[c]`` of them with a child of key ``c``; at
        most ``limit`` child keys are kept, the least used going first. Not the second and
        later windows of a run (a call missed a span at a time must not teach that it is
        rare)."""
        if self.runs and any(run[2] >= RUN_WINDOWS for run in self.runs.values()):
            return
        self.spans = decay * self.spans + n
        learned = self.calls
        for child in learned:
            learned[child] *= decay
        for child, k in calls.items():
            learned[child] = learned.get(child, 0.0) + k
        if len(learned) > limit:
            # ties broken by the key itself, so the same spans keep the same children
            for child in sorted(learned, key=lambda c: (learned[c], c))[: len(learned) - limit]:
                del learned[child]

    def share(self, child: Key) -> float:
        return self.calls.get(child, 0.0) / self.spans if self.spans else 0.0


class KeyStats:
    """Everything learned about one key."""

    __slots__ = (
        "_quantiles",
        "count_ewma",
        "count_var",
        "drift_ring",
        "err_k",
        "err_n",
        "err_windows",
        "error_run",
        "far_run",
        "fast",
        "low_streak",
        "slow",
        "slow_run",
        "windows",
    )

    def __init__(self, fast_epoch: int, slow_epoch: int) -> None:
        self.windows = 0  # windows with traffic seen (warm-up)
        self.count_ewma = 0.0
        # spans per window vary more than a Poisson count when calls come in bursts: this
        # EWMA of the squared deviation gives the key's own dispersion (variance / mean)
        self.count_var = 0.0
        # evidence accumulated over a run of windows that none alone could show (a key at one
        # or two spans a window): it starts at a suspicious window and lasts while the run's
        # own rate stays suspicious, so a window without an error (a fault in 40% of one or
        # two spans a window) does not end it. (errors, spans, windows, found), (slow, spans,
        # windows)
        self.error_run: tuple[float, float, int, bool] = _NO_ERROR_RUN
        self.slow_run: Run = NO_RUN
        # (spans far past the p99, spans, windows): see far_factor
        self.far_run: Run = NO_RUN
        # errors and spans learned (decayed as the slow baseline, about 80 windows): the spans
        # are also the key's slow count (see expected_count). An int 0, no float of its own,
        # until the key first fails
        self.err_k: float = 0
        self.err_n = 0.0
        # the windows err_n learned (to ERR_WINDOWS: a small int, no object of its own): the
        # weight it holds, which windows with traffic miscount (an empty window is learned,
        # an anomalous one is not)
        self.err_windows = 0
        self.fast = Sketches(fast_epoch)
        self.slow = Sketches(slow_epoch)
        # a run of low-traffic windows (see Streak)
        self.low_streak: Streak = NO_STREAK
        self.drift_ring: deque[tuple[int, int, float]] | None = None  # made when first needed
        self._quantiles: tuple[float, float] | None = None

    def quantiles(self) -> tuple[float, float]:
        """(p50, p99) of the latency baseline, computed once per change."""
        if self._quantiles is None:
            self._quantiles = (self.fast.quantile(0.5), self.fast.quantile(0.99))
        return self._quantiles

    def dispersion(self, settings: Settings) -> float:
        """Variance over mean of the key's spans per window; 1 (Poisson) at the least. The
        variance's average starts at 0, so its first windows are scaled up by what it has yet
        to weigh (as Adam's moment estimates are)."""
        if self.count_ewma <= 0 or self.windows < 2:
            return 1.0
        weighed = 1 - (1 - settings.slow_alpha) ** (self.windows - 1)
        return max(1.0, self.count_var / weighed / self.count_ewma)

    def error_rate(self) -> float:
        return self.err_k / self.err_n if self.err_n else 0.0

    def slow_above(self, settings: Settings) -> float:
        """The duration (ns) above which a span is slow: both slow_factor x the baseline p99
        and p99 plus min_latency_delta_ms (a change must matter, not only be improbable)."""
        p99 = self.quantiles()[1]
        return max(settings.slow_factor * p99, p99 + settings.min_latency_delta_ms * 1e6)

    def far_above(self, settings: Settings) -> float:
        """The duration (ns) above which a span is far past the key's usual range: far_factor
        x the baseline p99, and slow at least."""
        return max(settings.far_factor * self.quantiles()[1], self.slow_above(settings))

    def judge(self, acc: WindowAcc | None, warm: bool, settings: Settings) -> list[Finding]:
        """Findings for this key's window (``acc`` None: no spans this window)."""
        findings: list[Finding] = []
        n = acc.count if acc else 0
        if not warm:
            return findings
        # --- traffic: a run of windows far below the expected count
        expected = self.expected_count(settings)
        # a quiet run that began at a key busy enough goes on being judged: its first window
        # is learned (a lone one is how bursty the key is), and must not take it below
        if expected >= settings.min_expected_count or self.low_streak[1]:
            obs, exp, unlearned, spans, squares, found, err_w, err_n, err_k = self.low_streak
            low = n < settings.low_window_ratio * expected
            # A window that is not low carries the run on while the run as a whole stays low:
            # at a span or two a window, the one span a 90% drop lets through must not end it
            if low or (exp and (obs + n) <= settings.low_window_ratio * (exp + expected)):
                obs, exp = obs + n, exp + expected
                # quasi-Poisson: counts in units of the key's own dispersion (bursts of calls)
                phi = self.dispersion(settings)
                # and a silence is judged against a history longer than itself: a key seen
                # for seven minutes has not shown how long its quiet spells can be
                if (
                    low
                    and obs <= settings.drop_ratio * exp
                    and poisson_lower(obs / phi, exp / phi) < settings.p_value
                    and self.windows >= settings.drop_history * exp / expected
                ):
                    findings.append(
                        Finding(
                            Family.TRAFFIC,
                            "requests_per_window",
                            float(n),
                            expected,
                            "spans",
                            1 - obs / exp,
                            int(exp - obs),
                        )
                    )
                    found = True
                self.low_streak = (obs, exp, unlearned, spans, squares, found, err_w, err_n, err_k)
            else:
                if unlearned and not found:
                    self._learn_quiet(self.low_streak, settings)
                self.low_streak = NO_STREAK
        if acc is None or n == 0:
            return findings
        # --- errors
        p0 = max(settings.min_error_rate, self.error_rate())
        k = acc.errors
        error_high = max(settings.min_error_share, settings.error_factor * p0)
        rk, rn, rw, found = self.error_run
        suspicious = k and k / n >= error_high
        if suspicious and k >= settings.min_errors and chernoff_upper(k, n, p0) < settings.p_value:
            findings.append(
                Finding(
                    Family.ERRORS, "error_rate", k / n, self.error_rate(), "ratio", (k / n) / p0, k
                )
            )
            self.error_run = _NO_ERROR_RUN
        elif suspicious or (rw and consistent(k, n, rk, rn, settings)):
            rk, rn, rw = extend_run(rk, rn, rw, k, n, settings.run_windows)
            if rk / rn < error_high:
                # noise after all: the run's windows (this one aside: learn() takes it) teach
                # the baseline now, as they would have one by one
                self._end_error_run(rk - k, rn - n, found)
            elif (
                suspicious
                and rw >= RUN_WINDOWS
                and rk >= settings.min_errors
                and chernoff_upper(rk, rn, p0) < settings.p_value
            ):
                # (only a window that shows errors itself renews the finding: the run's
                # evidence must not outlive the fault)
                self.error_run = (rk, rn, rw, True)
                findings.append(
                    Finding(
                        Family.ERRORS,
                        "error_rate",
                        rk / rn,
                        self.error_rate(),
                        "ratio",
                        (rk / rn) / p0,
                        round(rk),
                    )
                )
            else:
                self.error_run = (rk, rn, rw, found)
        elif rw:
            self._end_error_run(rk, rn, found)
        # --- latency
        samples = self.fast.count()
        if samples >= settings.min_latency_samples:
            p50 = self.quantiles()[0]
            durations = acc.durations
            m = len(durations)
            slow_above = self.slow_above(settings)
            above = sum(1 for d in durations if d > slow_above)
            mid = median(durations)
            # From few samples the baseline's p99 is about their largest, which a healthy span
            # passes with chance 1/(samples + 1) (it is as likely as any to be the largest)
            expected_slow = max(settings.slow_expected, 1 / (samples + 1))
            suspicious = above and above / m >= settings.slow_share
            self.slow_run = ra, rm, rw = carry_run(
                self.slow_run, above, m, settings.slow_share, settings
            )
            if suspicious and (
                (
                    above >= settings.min_slow
                    and chernoff_upper(above, m, expected_slow) < settings.p_value
                )
                or (
                    rw >= RUN_WINDOWS
                    and ra >= settings.min_slow
                    and chernoff_upper(ra, rm, expected_slow) < settings.p_value
                )
            ):
                findings.append(
                    Finding(
                        Family.LATENCY,
                        "p50_latency_ms",
                        mid / 1e6,
                        p50 / 1e6,
                        "ms",
                        mid / max(p50, 1.0),
                        round(above * n / m),
                    )
                )
            elif (far := self._far(acc, durations, above, samples, settings)) is not None:
                findings.append(far)
            elif self.slow.count() >= settings.min_drift_samples:
                slow_p75 = self.slow.quantile(0.75)
                slow_p50 = self.slow.quantile(0.5)
                ring = self.drift_ring
                if ring is None:
                    ring = self.drift_ring = deque(maxlen=settings.drift_windows)
                ring.append((m, sum(1 for d in durations if d > slow_p75), mid))
                total = sum(r[0] for r in ring)
                high = sum(r[1] for r in ring)
                medians = [r[2] for r in ring]
                recent = medians[-settings.drift_recent :]
                if (
                    len(ring) >= settings.drift_recent
                    and high / total >= settings.drift_share
                    and chernoff_upper(high, total, settings.drift_expected) < settings.p_value
                    and min(recent)
                    > max(
                        settings.drift_factor * slow_p50,
                        slow_p50 + settings.min_latency_delta_ms * 1e6,
                    )
                ):
                    findings.append(
                        Finding(
                            Family.LATENCY,
                            "p50_latency_ms",
                            mid / 1e6,
                            slow_p50 / 1e6,
                            "ms",
                            mid / max(slow_p50, 1.0),
                            high,
                            drift=True,
                            # a step of the typical span is a spike that the tail hid
                            step=min(recent)
                            > settings.drift_step * max(medians[: settings.drift_recent]),
                        )
                    )
        return findings

    def _far(
        self, acc: WindowAcc, durations: list[int], slow: int, samples: float, settings: Settings
    ) -> Finding | None:
        """A latency finding when spans far past the baseline's p99 (far_factor x it) come far
        more often than it allows, in this window or over a run of windows (see judged); the
        window's ``slow`` spans (over slow_above) hold them all. Its examples are the far
        spans among the window's slowest: the root-cause walk follows them, not the slowest
        of the rest (a caller's own tail, another callee's). It tells the window's slowest
        span; its magnitude is how far past the bar the far spans typically are (a span past
        a bar of 4x the p99 is no 4x slowdown of the key)."""
        if not slow and not self.far_run[2]:
            return None
        bar = self.far_above(settings)
        far = [d for d in durations if d > bar] if slow else []
        if not far and not self.far_run[2]:
            return None
        # the share of the baseline past the bar (a service whose GC pauses are its own
        # holds them), or what its samples can tell
        expected = max(settings.far_expected, 1 / (samples + 1), self.fast.share_above(bar))
        self.far_run, found, _ = judged(
            self.far_run, len(far), len(durations), expected, settings.min_slow, settings
        )
        # over two windows or more: one pause that held up a window's calls at once is none
        if not found or self.far_run[2] < RUN_WINDOWS:  # (found: far spans in this window)
            return None
        slowest = acc.slowest
        worst = slowest[0][0] if slowest else max(far)
        return Finding(
            Family.LATENCY,
            "max_latency_ms",
            worst / 1e6,
            self.quantiles()[1] / 1e6,
            "ms",
            median(far) / bar,
            found,
            examples=tuple((trace, span) for d, trace, span in slowest if d > bar),
        )

    def expected_count(self, settings: Settings) -> float:
        """Spans expected in a window: the lower of the fast count, which follows the day, and
        the slow one, which a chance busy stretch at a span or two a window does not lift.
        The slow count is the decayed spans learned for the error rate over the weight they
        were learned with (as Adam's moment estimates are scaled)."""
        if self.err_windows < 1:
            return self.count_ewma
        slow = settings.slow_alpha
        weighed = 1 - (1 - slow) ** self.err_windows
        return min(self.count_ewma, self.err_n * slow / weighed)

    def quiet_windows(self, settings: Settings) -> float:
        """How many windows' worth of expected spans the run of quiet windows holds."""
        expected = self.expected_count(settings)
        return self.low_streak[1] / expected if expected else 0.0

    def quiet(self, settings: Settings) -> bool:
        """In a run of quiet windows at a drop's level, significant yet or not (more than a
        lone quiet window, which at a span or two a window is common)."""
        observed, expected = self.low_streak[:2]
        return (
            expected > QUIET_RUN * self.expected_count(settings)
            and observed <= settings.drop_ratio * expected
        )

    def _end_error_run(self, k: float, n: float, found: bool) -> None:
        """A run ends: unless it gave a finding, its windows (k errors of n spans, the judged
        window not among them) are learned now."""
        if not found:
            if k > 0:
                self.err_k += k
            self.err_n += max(0.0, n)
        self.error_run = _NO_ERROR_RUN

    def _learn_quiet(self, run: Streak, settings: Settings) -> None:
        """A quiet run ends without a drop: the windows of it kept aside are learned now, as
        the count EWMA would have learned them (each at their mean count, the variance at
        their own spread), and the error rate's spans and errors (the slow count) those of
        them outside an error run (which learns its own). Left out, a bursty key's expected
        count would be that of its bursts, not of its gaps between them (1.5-1.7x its mean at
        a burst of ten every few windows)."""
        _, _, windows, spans, squares, _, err_windows, err_n, err_k = run
        a, slow = settings.rate_alpha, settings.slow_alpha
        mean, square = spans / windows, squares / windows
        for _ in range(windows):
            ewma = self.count_ewma
            # the mean squared deviation of the windows' counts from the EWMA
            spread = max(0.0, square - 2 * mean * ewma + ewma * ewma)
            self.count_ewma += a * (mean - ewma)
            self.count_var = (1 - slow) * (self.count_var + slow * spread)
        if err_windows:
            keep = (1 - slow) ** err_windows
            self.err_k = keep * self.err_k + err_k
            self.err_n = keep * self.err_n + err_n
            self.err_windows = min(ERR_WINDOWS, self.err_windows + err_windows)

    def learn(self, acc: WindowAcc | None, anomalous: bool, settings: Settings) -> None:
        """Fold a window into the baseline, unless it was anomalous."""
        n = acc.count if acc else 0
        if n:
            self.windows += 1
        if anomalous:
            return
        a = settings.rate_alpha
        # the second and later of a run of quiet windows not yet judged: a drop must not teach
        # its own level. (A lone quiet window is learned: it is how bursty the key is.)
        quiet = QUIET_RUN <= self.quiet_windows(settings) <= settings.drop_windows
        if quiet:  # kept aside: learned if the run ends without a drop (see _learn_quiet)
            obs, exp, unlearned, spans, squares, found, windows, err_n, err_k = self.low_streak
            if not self.error_run[2]:
                windows, err_n, err_k = windows + 1, err_n + n, err_k + (acc.errors if acc else 0)
            self.low_streak = (
                obs,
                exp,
                unlearned + 1,
                spans + n,
                squares + n * n,
                found,
                windows,
                err_n,
                err_k,
            )
        elif self.windows <= 1:
            self.count_ewma = n
        else:
            deviation = n - self.count_ewma
            self.count_ewma += a * deviation
            # slower than the mean (a variance from a few windows is itself too noisy to
            # trust): about 80 windows, as the error rate
            slow = settings.slow_alpha
            self.count_var = (1 - slow) * (self.count_var + slow * deviation * deviation)
        # The windows of a run of suspicious ones are not learned either while it lasts (a
        # fault that shows a span at a time must not raise the baseline it is judged on);
        # judge() teaches them once the run turns out to be noise. Nor are the second and
        # later of a slow run's, nor (the spans being the slow count) a drop's quiet ones.
        if not self.error_run[2] and not quiet:
            keep = 1 - settings.slow_alpha
            errors = acc.errors if acc else 0
            if self.err_k or errors:
                self.err_k = keep * self.err_k + errors
            self.err_n = keep * self.err_n + n
            if self.err_windows < ERR_WINDOWS:
                self.err_windows += 1
        durations = (
            acc.durations
            if acc and self.slow_run[2] < RUN_WINDOWS and self.far_run[2] < RUN_WINDOWS
            else []
        )
        if durations:
            self._quantiles = None
            buckets = bucketed(durations)
            self.fast.learn(buckets)
            self.slow.learn(buckets)
