"""Findings about what a key's errors and calls are, not how many: an error signature never
seen for its service (new_error), and the same call made again and again in one trace
(retry_storm)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from ._calls import CLIENT_KINDS
from ._keys import Key
from ._settings import Settings
from ._stats import (
    Family,
    Finding,
    KeyStats,
    WindowAcc,
    chernoff_upper,
    consistent,
    extend_run,
)
from ._structure import CALLS
from ._traces import KEY, PARENT, WIDTH

# an IP address in a name (a client call's target): IPv4, or IPv6 in brackets
_ADDRESS = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])|\[[0-9A-Fa-f:]+\]")

_NO_RUN: tuple[float, float, int, bool] = (0.0, 0.0, 0, False)


# the signature of a failed span with neither an exception type nor a status message
BARE_ERROR = "error"


class NewErrors:
    """Error signatures known for each service (within its scope), and those seen lately
    that are still new."""

    def __init__(self, settings: Settings, stats: dict[Key, KeyStats]) -> None:
        self.settings = settings
        self.stats = stats
        # (service, scope) -> error signatures known for it
        self.known: dict[tuple[str, str], set[str]] = defaultdict(set)
        # (service, scope) -> call signatures known for it (at most max_known_calls)
        self.known_calls: dict[tuple[str, str], set[str]] = defaultdict(set)
        # (key, signature) -> (first window, occurrences since, the rate it may have had
        # unseen): of each key, judged against that key's spans (new for its service)
        self.new: dict[tuple[Key, str], tuple[int, int, float]] = {}

    def findings(self, key: Key, acc: WindowAcc, window: int, learning: bool) -> list[Finding]:
        """The key's new error signatures this window; while ``learning`` every signature is
        learned as known."""
        stats = self.stats.get(key)
        rate = max(self.settings.min_error_rate, stats.error_rate() if stats is not None else 0.0)
        # a failure with neither an exception type nor a message ("error": a 4xx a client
        # span marks, a bare status) says nothing new; the error rate judges it
        signatures = {sig: n for sig, n in (acc.signatures or {}).items() if sig != BARE_ERROR}
        return self._judge(key, signatures, acc.count, window, learning, rate)

    def new_calls(
        self, key: Key, spans: int, children: Counter[Key], window: int, learning: bool
    ) -> list[tuple[Finding, Key]]:
        """Calls of ``key``'s spans (of ``spans`` that did not fail, ``children[c]`` called a
        child of key ``c``) to keys it never called before: a new span name below it, as an
        error controller, a fallback or a new code path shows in a trace whose spans carry no
        status. Judged as a new signature is, on the key; while ``learning`` (or the key's own
        warm-up) each is learned as known. Each finding with the child key it is of."""
        known = self.known_calls[key.service, key.scope]
        if len(known) >= self.settings.max_known_calls:
            return []  # names without bound are no structure to judge
        named: dict[str, int] = {}
        child_of: dict[str, Key] = {}
        for child, count in sorted(children.items()):  # in key order, whatever the hash seed
            if _ADDRESS.search(child.operation):
                continue  # a call to an address, not a name: a pod's, new with every rollout
            own = child.service == key.service
            signature = CALLS + (child.operation if own else f"{child.service} {child.operation}")
            if signature not in known:
                named[signature] = named.get(signature, 0) + count
                child_of[signature] = child
        if not named:
            return []
        rate = self.settings.min_error_rate
        found = self._judge(key, named, spans, window, learning, rate, known)
        return [(replace(f, metric="new_call_count"), child_of[f.signature]) for f in found]

    def _judge(
        self,
        key: Key,
        signatures: dict[str, int],
        spans_now: int,
        window: int,
        learning: bool,
        rate: float,
        calls: set[str] | None = None,
    ) -> list[Finding]:
        """Findings for the signatures of a key's window not known for its service (error
        signatures, not known for many others either; or, given the service's known
        ``calls``, call signatures): each new one alone in a window far above ``rate``, or
        accumulated since it first appeared far above the rate it may have had unseen."""
        s = self.settings
        generic = calls is None
        known = self.known[key.service, key.scope] if calls is None else calls
        stats = self.stats.get(key)
        out = []
        for signature, count in signatures.items():
            if signature in known or (
                generic and self.common_elsewhere(signature, (key.service, key.scope))
            ):
                continue
            if learning:
                known.add(signature)
                continue
            ident = (key, signature)
            entry = self.new.get(ident)
            if entry is None:
                # The rate it may have had unseen: half a span in the key's recent exposure,
                # which held none of it (the decayed span count the error rate is learned on).
                exposure = stats.err_n if stats is not None else 0.0
                entry = (window, 0, max(s.min_new_error_rate, 0.5 / (exposure + 1)))
                if len(self.new) >= s.new_errors_per_key * s.max_keys:  # bounded
                    del self.new[next(iter(self.new))]
            first, total, prior = entry
            total += count
            self.new[ident] = (first, total, prior)
            spans = max(spans_now, round((window - first + 1) * (stats.count_ewma if stats else 0)))
            if window - first >= s.new_error_windows:
                known.add(signature)  # it has been around long enough to be ordinary
                del self.new[ident]
            elif (
                count >= s.min_new_errors and chernoff_upper(count, spans_now, rate) < s.p_value
            ) or (
                # evidence accumulated since it first appeared: a few percent of one
                # operation's requests, or fewer, shows within minutes
                total >= s.min_new_errors and chernoff_upper(total, spans, prior) < s.p_value
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

    def common_elsewhere(self, signature: str, service: tuple[str, str]) -> bool:
        """A generic failure (a transport status many services raise) is not a new error."""
        others = {
            svc[0]
            for svc, known in self.known.items()
            if svc[0] != service[0] and signature in known
        }  # other services by name: one service in three environments is one service
        return len(others) >= self.settings.common_error_services


class Retries:
    """Each client key's usual share of traces that retry it, and the storms above it."""

    def __init__(self, settings: Settings, stats: dict[Key, KeyStats]) -> None:
        self.settings = settings
        self.stats = stats
        # key -> (traces that retried it, traces that called it), decayed a window at a time:
        # the usual share, weighed by traces (one retried trace at a quiet key is not 10%)
        self.ewma: dict[Key, tuple[float, float]] = {}
        # key -> (traces retrying it, traces calling it, windows, whether it gave a finding)
        # over a run of windows that began at one with retries
        self.runs: dict[Key, tuple[float, float, int, bool]] = {}

    def findings(
        self, traces: list[list[Any]], accs: dict[Key, WindowAcc]
    ) -> list[tuple[Key, Finding]]:
        """Retry storms in the window's traces; the share retried is learned for the rest."""
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
                if n >= s.retry_repeats:
                    retried[key] += 1
                    worst[key] = max(worst.get(key, 0), n)
        out = []
        runs = self.runs
        for key, traces_with_key in per_key.items():
            hits = retried[key]
            share = hits / traces_with_key
            stats = self.stats.get(key)
            warm = stats is not None and stats.windows >= s.warmup_windows
            # At a trace or two a window, retries accumulate over a run of windows, as errors
            # do; the run's windows are learned only once it ends without a storm
            run_hits, run_traces, windows, found = runs.get(key, _NO_RUN)
            suspicious = hits > 0 and share >= s.retry_share
            if warm and (
                suspicious
                or (windows and consistent(hits, traces_with_key, run_hits, run_traces, s))
            ):
                run_hits, run_traces, windows = extend_run(
                    run_hits, run_traces, windows, hits, traces_with_key, s.run_windows
                )
                if run_hits / run_traces >= s.retry_share:
                    usual = self.usual(key)
                    # and improbable at the usual share, as every other test: a key that
                    # several callers share, one of them calling it in a loop (an item at a
                    # time), retries nothing when that caller is busier than usual
                    storm = (
                        suspicious
                        and run_hits >= s.retry_min_traces
                        and usual < s.retry_usual
                        and chernoff_upper(run_hits, run_traces, max(s.min_error_rate, usual))
                        < s.p_value
                    )
                    runs[key] = (run_hits, run_traces, windows, found or storm)
                    if storm:
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
                                    round(run_hits),
                                ),
                            )
                        )
                    continue
                # noise after all: the run's earlier windows are learned now, this one below
                self._end(key, run_hits - hits, run_traces - traces_with_key, found)
            elif windows:
                self._end(key, run_hits, run_traces, found)
            self._learn(key, hits, traces_with_key)
        return out

    def _end(self, key: Key, hits: float, traces: float, found: bool) -> None:
        """A run ends: unless it was a storm, its share (the judged window aside) is learned."""
        del self.runs[key]
        if not found and traces > 0:
            self._learn(key, hits, traces)

    def _learn(self, key: Key, hits: float, traces: float) -> None:
        keep = 1 - self.settings.retry_alpha
        k, n = self.ewma.get(key, (0.0, 0.0))
        self.ewma[key] = (keep * k + hits, keep * n + traces)

    def usual(self, key: Key) -> float:
        """The share of a key's traces that retry it, as learned."""
        k, n = self.ewma.get(key, (0.0, 0.0))
        return k / n if n else 0.0

    def forget(self, key: Key) -> None:
        self.ewma.pop(key, None)
        self.runs.pop(key, None)
