"""Per-key window statistics, baselines and the significance tests on them.

Baselines learn only from windows that were not judged anomalous, so a fault never becomes the
new normal while it lasts. Rates follow slow exponentially weighted averages (ordinary daily
swings are slow next to a 10-second window); latency lives in DDSketch quantile sketches
rotated in epochs, so the baseline follows gradual change without forgetting at once.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass, field

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from ._settings import Settings

SKETCH_ACCURACY = 0.05
RESERVOIR = 256
SLOWEST = 8
# What every sketch shares: the bucket mapping, and an empty store for the negative values
# durations never have. Each sketch's own store grows in small steps: a key's latencies
# usually span a few dozen buckets, and 100 000 keys hold four sketches each.
_MAPPING = LogarithmicMapping(SKETCH_ACCURACY)
_NO_NEGATIVES = DenseStore()
_CHUNK = 8


def _sketch() -> BaseDDSketch:
    return BaseDDSketch(_MAPPING, DenseStore(_CHUNK), _NO_NEGATIVES, 0.0)


def chernoff_upper(k: int, n: int, p: float) -> float:
    """An upper bound on P(X ≥ k) for X ~ Binomial(n, p); 1 when k/n ≤ p."""
    if n <= 0 or k <= 0:
        return 1.0
    q = k / n
    if q <= p:
        return 1.0
    if q >= 1.0:
        return p**n
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
    # (span id, duration, trace id) of the smallest span ids seen, up to 2 x RESERVOIR before
    # a cut; span ids are 8 bytes, so their byte order is their numeric order
    sample: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    cut: bytes = b"\xff" * 9  # ids at or above it cannot make the sample any more
    # (duration, trace, span) of the slowest, kept apart only once the sample has been cut:
    # until then every span is in the sample
    top: list[tuple[int, bytes, bytes]] | None = None
    slow_cut: int = -1  # durations below it cannot make the slowest 8
    signatures: Counter[str] | None = None
    error_examples: list[tuple[bytes, bytes]] | None = None  # (span, trace), smallest span ids

    def add(self, duration: int, error_signature: str, trace_id: bytes, span_id: bytes) -> None:
        self.count += 1
        top = self.top
        if top is not None and duration >= self.slow_cut:
            top.append((duration, trace_id, span_id))
            if len(top) >= 2 * SLOWEST:
                top.sort(reverse=True)
                del top[SLOWEST:]
                self.slow_cut = top[-1][0]
        if span_id < self.cut:
            sample = self.sample
            sample.append((span_id, duration, trace_id))
            if len(sample) >= 2 * RESERVOIR:
                self._cut()
        if error_signature:
            self.errors += 1
            if self.signatures is None or self.error_examples is None:
                self.signatures, self.error_examples = Counter(), []
            self.signatures[error_signature] += 1
            _keep_smallest(self.error_examples, (span_id, trace_id), 20)

    def _cut(self) -> None:
        """Keep the RESERVOIR smallest span ids (and, from the first cut on, the slowest apart)."""
        sample = self.sample
        if len(sample) > RESERVOIR and self.top is None:  # every span so far is in the sample
            self.top = self.slowest
            self.slow_cut = self.top[-1][0]
        sample.sort()
        del sample[RESERVOIR:]
        if len(sample) == RESERVOIR:
            self.cut = sample[-1][0]

    def _sample(self) -> list[tuple[bytes, int, bytes]]:
        self._cut()
        return self.sample

    @property
    def durations(self) -> list[int]:
        return [d for _, d, _ in self._sample()]

    @property
    def slowest(self) -> list[tuple[int, bytes, bytes]]:
        """The 8 slowest spans as (duration, trace id, span id), slowest first."""
        if self.top is not None:
            return sorted(self.top, reverse=True)[:SLOWEST]
        return heapq.nlargest(SLOWEST, ((d, trace, span) for span, d, trace in self.sample))

    def example_ids(self, errors: bool = False) -> list[tuple[bytes, bytes]]:
        """(trace id, span id) pairs, in span id order: 20 of the errors, or 5 of all spans."""
        if errors:
            return [(trace, span) for span, trace in sorted(self.error_examples or ())]
        return [(trace, span) for span, _, trace in self._sample()[:5]]


def _keep_smallest(items: list[tuple[bytes, bytes]], item: tuple[bytes, bytes], limit: int) -> None:
    if len(items) < limit:
        items.append(item)
        return
    largest = max(items)
    if item < largest:
        items[items.index(largest)] = item


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2]) if ordered else 0.0


def bucketed(durations: list[int]) -> list[tuple[float, float]]:
    """Durations as (a value of the bucket, how many) per sketch bucket: adding those to a
    sketch fills its buckets and count exactly as adding each duration would (its sum, which
    nothing here reads, is the one thing that differs), at a fraction of the cost."""
    key = _MAPPING.key
    values = [float(d) for d in durations if d > 0]
    keys = list(map(key, values))
    counts = Counter(keys)
    some = dict(zip(keys, values, strict=True))
    pairs = [(some[k], float(n)) for k, n in counts.items()]
    zeros = len(durations) - len(values)
    if zeros:
        pairs.append((0.0, float(zeros)))
    return pairs


class Sketches:
    """Two DDSketch epochs: the baseline is their union; the older one is dropped each epoch."""

    __slots__ = ("current", "epoch_windows", "previous", "windows")

    def __init__(self, epoch_windows: int) -> None:
        self.current = _sketch()
        self.previous: BaseDDSketch | None = None
        self.windows = 0
        self.epoch_windows = epoch_windows

    def learn(self, buckets: list[tuple[float, float]]) -> None:
        """Add a window's durations, given as :func:`bucketed` (value, weight) pairs."""
        for value, weight in buckets:
            self.current.add(value, weight)
        self.windows += 1
        if self.windows >= self.epoch_windows:
            self.previous, self.current = self.current, _sketch()
            self.windows = 0

    def count(self) -> float:
        return float(self.current.count + (self.previous.count if self.previous else 0))

    def quantile(self, q: float) -> float:
        if self.previous is None:
            value = self.current.get_quantile_value(q)
        elif self.current.count < 50:
            value = self.previous.get_quantile_value(q)
        else:
            merged = _sketch()
            merged.merge(self.previous)
            merged.merge(self.current)
            value = merged.get_quantile_value(q)
        return float(value or 0.0)


@dataclass(slots=True)
class Finding:
    """One anomaly of one key in one window, before grouping by root cause."""

    family: str  # "errors", "latency", "traffic", "new_error", "retry"
    metric: str
    observed: float
    baseline: float
    unit: str
    magnitude: float  # how far from normal, >1 (ratio) for severity
    affected: int  # spans showing it
    drift: bool = False
    signature: str = ""


class KeyStats:
    """Everything learned about one key."""

    __slots__ = (
        "_quantiles",
        "count_ewma",
        "drift_ring",
        "err_k",
        "err_n",
        "fast",
        "low_streak",
        "slow",
        "windows",
    )

    def __init__(self, fast_epoch: int, slow_epoch: int) -> None:
        self.windows = 0  # windows with traffic seen (warm-up)
        self.count_ewma = 0.0
        self.err_k = 0.0
        self.err_n = 0.0
        self.fast = Sketches(fast_epoch)
        self.slow = Sketches(slow_epoch)
        self.low_streak: list[float] = [0.0, 0.0]  # observed, expected over a low-traffic run
        self.drift_ring: deque[tuple[int, int, float]] | None = None  # made when first needed
        self._quantiles: tuple[float, float] | None = None

    def quantiles(self) -> tuple[float, float]:
        """(p50, p99) of the latency baseline, computed once per change."""
        if self._quantiles is None:
            self._quantiles = (self.fast.quantile(0.5), self.fast.quantile(0.99))
        return self._quantiles

    def error_rate(self) -> float:
        return self.err_k / self.err_n if self.err_n else 0.0

    def judge(self, acc: WindowAcc | None, warm: bool, settings: Settings) -> list[Finding]:
        """Findings for this key's window (``acc`` None: no spans this window)."""
        findings: list[Finding] = []
        n = acc.count if acc else 0
        if not warm:
            return findings
        # --- traffic: a run of windows far below the expected count
        expected = self.count_ewma
        if expected >= settings.min_expected_count:
            if n < 0.5 * expected:
                self.low_streak[0] += n
                self.low_streak[1] += expected
                obs, exp = self.low_streak
                if obs <= settings.drop_ratio * exp and poisson_lower(obs, exp) < settings.p_value:
                    findings.append(
                        Finding(
                            "traffic",
                            "requests_per_window",
                            float(n),
                            expected,
                            "spans",
                            1 - obs / exp,
                            int(exp - obs),
                        )
                    )
            else:
                self.low_streak = [0.0, 0.0]
        if acc is None or n == 0:
            return findings
        # --- errors
        p0 = max(settings.min_error_rate, self.error_rate())
        k = acc.errors
        if (
            k >= settings.min_errors
            and k / n >= max(0.05, 4 * p0)
            and chernoff_upper(k, n, p0) < settings.p_value
        ):
            findings.append(
                Finding("errors", "error_rate", k / n, self.error_rate(), "ratio", (k / n) / p0, k)
            )
        # --- latency
        if self.fast.count() >= settings.min_latency_samples:
            p50, p99 = self.quantiles()
            durations = acc.durations
            m = len(durations)
            above = sum(1 for d in durations if d > 1.2 * p99)
            median = _median(durations)
            if (
                above >= settings.min_slow
                and above / m >= 0.2
                and chernoff_upper(above, m, 0.02) < settings.p_value
            ):
                findings.append(
                    Finding(
                        "latency",
                        "p50_latency_ms",
                        median / 1e6,
                        p50 / 1e6,
                        "ms",
                        median / max(p50, 1.0),
                        round(above * n / m),
                    )
                )
            elif self.slow.count() >= settings.min_latency_samples:
                slow_p75 = self.slow.quantile(0.75)
                slow_p50 = self.slow.quantile(0.5)
                ring = self.drift_ring
                if ring is None:
                    ring = self.drift_ring = deque(maxlen=18)
                ring.append((m, sum(1 for d in durations if d > slow_p75), median))
                total = sum(r[0] for r in ring)
                high = sum(r[1] for r in ring)
                recent = [r[2] for r in list(ring)[-6:]]
                if (
                    len(ring) >= 6
                    and high / total >= 0.6
                    and chernoff_upper(high, total, 0.3) < settings.p_value
                    and min(recent) > 1.25 * slow_p50
                ):
                    findings.append(
                        Finding(
                            "latency",
                            "p50_latency_ms",
                            median / 1e6,
                            slow_p50 / 1e6,
                            "ms",
                            median / max(slow_p50, 1.0),
                            high,
                            drift=True,
                        )
                    )
        return findings

    def learn(self, acc: WindowAcc | None, anomalous: bool, settings: Settings) -> None:
        """Fold a window into the baseline, unless it was anomalous."""
        n = acc.count if acc else 0
        if n:
            self.windows += 1
        if anomalous:
            return
        a = settings.rate_alpha
        self.count_ewma = n if self.windows <= 1 else (1 - a) * self.count_ewma + a * n
        self.err_k = (1 - a / 4) * self.err_k + (acc.errors if acc else 0)
        self.err_n = (1 - a / 4) * self.err_n + n
        durations = acc.durations if acc else []
        if durations:
            self._quantiles = None
            buckets = bucketed(durations)
            self.fast.learn(buckets)
            self.slow.learn(buckets)
