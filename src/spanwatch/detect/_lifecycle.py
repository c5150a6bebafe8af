"""Incident lifecycle: groups open incidents or join open ones, evidence follows the root
cause window by window (series, peak, share affected), and quiet incidents resolve."""

from __future__ import annotations

import hashlib
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from spanwatch.model import (
    Deploy,
    Event,
    EventType,
    Evidence,
    Incident,
    Operation,
    Pattern,
    SeriesPoint,
    split_scope,
)

from ._grouping import (
    FAMILY_OF,
    SPECIFICITY,
    Group,
    lead_finding,
    pattern_of,
    severity_of,
    summary_of,
)
from ._keys import Key
from ._own import OwnTimes, own_bar
from ._rootcause import critical_path
from ._settings import Settings
from ._stats import Family, Finding, KeyStats, WindowAcc, median
from ._structure import ancestors
from ._traces import Traces

# An open incident's evidence follows its root cause every window (its value now: over the
# last UPDATE_WINDOWS windows); an update goes out when that moves by 30% (of itself or its
# baseline) or the share affected by 0.2, at most every UPDATE_WINDOWS windows (severity and
# blast radius changes go at once).
SERIES_POINTS = 30
UPDATE_WINDOWS = 3
MOVED = 0.3
SHARE_MOVED = 0.2
DEPLOY_HORIZON_NS = 30 * 60 * 1_000_000_000  # deploys this long before an incident matter
# a version is live while spans of it came this recently: instances of the old and the new
# serving side by side through a rolling deploy make one deploy
DEPLOY_LIVE_NS = 10 * 60 * 1_000_000_000
# versions remembered per service at most (a build id per process must not grow it)
DEPLOY_VERSIONS = 8


@dataclass(slots=True)
class Open:
    incident: Incident
    keys: set[Key]
    last_window: int
    lead: Key  # whose spans the evidence measures, window by window
    finding: Finding  # the lead finding: what the summary says, redone as the evidence moves
    front: str = ""  # the summary's: the trouble is in front of the root, or in its answers
    counted: int = 0  # a new error's spans since the incident opened
    series: deque[SeriesPoint] = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))
    shown: tuple[float, float] = (0.0, 0.0)  # (observed, share) as last published
    # (value, share, spans) of the last UPDATE_WINDOWS windows measured: "now" is their
    # weighted mean, steadier than one window of a key at a few spans a window
    recent: deque[tuple[float, float, int]] = field(
        default_factory=lambda: deque(maxlen=UPDATE_WINDOWS)
    )
    shown_window: int = 0
    healthy: int = 0  # windows since its last evidence in which its lead key's spans came


class Deploys:
    """Each service's live versions (within its scope), and the latest changes of them: the
    deploys an incident names. A version is live while its spans keep coming (DEPLOY_LIVE_NS):
    a rolling deploy, old and new instances serving side by side for a while, is one deploy,
    when the new version first shows; going back to a version no longer live is another."""

    def __init__(self, settings: Settings) -> None:
        # (service, scope) -> version -> the end (ns) of its latest span seen
        self.live: dict[tuple[str, str], dict[str, int]] = {}
        self.deploys: deque[tuple[str, Deploy]] = deque(maxlen=settings.max_deploys)

    def track(
        self, services: list[str], scopes: list[str], versions: list[str], ends: list[int]
    ) -> None:
        """Note each service's versions (within its scope), and a deploy when one shows that
        is not live while another is (or was never seen): judged against what was live before
        the batch, so a fleet back from a pause (every version stale) deploys nothing."""
        if not ends:
            return
        now = max(ends)
        live = self.live
        shown = [
            triple
            for triple in dict.fromkeys(zip(services, scopes, versions, strict=True))
            if triple[2]
        ]
        changed = []
        for service, scope, version in shown:
            seen = live.get((service, scope))
            if seen is None:
                continue  # its first version: no deploy
            last = seen.get(version)
            if last is not None and now - last <= DEPLOY_LIVE_NS:
                continue
            others = {v: t for v, t in seen.items() if v != version}
            if others and (last is None or max(others.values()) >= now - DEPLOY_LIVE_NS):
                changed.append((service, scope, version, max(others, key=lambda v: (others[v], v))))
        if changed:  # when each first showed: the batch is in end order, one pass
            first: dict[tuple[str, str, str], int] = {}
            for triple in zip(services, scopes, versions, ends, strict=True):
                first.setdefault(triple[:3], triple[3])
            for service, scope, version, previous in changed:
                at = first[service, scope, version]
                self.deploys.append((scope, Deploy(service, previous, version, at)))
        for service, scope, version in shown:
            seen = live.setdefault((service, scope), {})
            seen[version] = now
            if len(seen) > DEPLOY_VERSIONS:  # the least recently seen go
                for old in sorted(seen, key=lambda v: (seen[v], v))[: len(seen) - DEPLOY_VERSIONS]:
                    del seen[old]

    def before(self, scope: str, services: set[str], started_ns: int) -> tuple[Deploy, ...]:
        """The deploys of ``services`` in ``scope`` shortly before an incident started."""
        return tuple(
            d
            for at, d in self.deploys
            if at == scope and d.service in services and d.at_ns >= started_ns - DEPLOY_HORIZON_NS
        )


class Incidents:
    """The open incidents, by root cause."""

    def __init__(
        self,
        settings: Settings,
        stats: dict[Key, KeyStats],
        parents: dict[Key, set[Key]],
        deploys: Deploys,
    ) -> None:
        self.settings = settings
        self.w = settings.window_ns
        self.stats = stats
        self.parents = parents
        self.deploys = deploys
        self.open: dict[Operation, Open] = {}

    def resolve_all(self) -> list[Event]:
        """Every open incident resolved at its own last window (time has started over)."""
        events = []
        for current in self.open.values():
            resolved = replace(current.incident, resolved_at_ns=(current.last_window + 1) * self.w)
            events.append(Event.incident(EventType.INCIDENT_RESOLVED, resolved))
        self.open.clear()
        return events

    def update(
        self,
        groups: dict[Operation, Group],
        window: int,
        window_spans: int,
        accs: dict[Key, WindowAcc],
        traces: Traces,
        own: OwnTimes,
        ended: dict[Key, tuple[int, int]],
        running: Callable[[Key], bool],
    ) -> list[Event]:
        """Open, update and resolve incidents on a closed window's groups (``window_spans``:
        the window's spans of every key; ``accs``: each key's window; ``own``: its handler
        spans' own times; ``ended``: how many of them ended on an answer, of how many;
        ``running``: whether a key is in a run of suspicious windows)."""
        events: list[Event] = []
        start_ns = window * self.w
        end_ns = start_ns + self.w
        for root, group in sorted(groups.items(), key=lambda rg: (rg[0].service, rg[0].operation)):
            keys = {k for k, _ in group.findings}
            current = self.open.get(root)
            same_root = current is not None

            if current is None:
                # A symptom joins an open incident only while that incident's root is anomalous
                # now (this window or the last), and only when it is the root's own key or a
                # caller of it; so one incident that never resolves cannot absorb later faults.
                # Another operation of the same service failing (or slowing) the same way while
                # its incident is open (its evidence no older than quiet_windows: at a few
                # spans a window, or in bursts, its operations show a few windows apart) is
                # the same fault (shared code, a shared database, a starved CPU): one incident.
                recent = window - 1
                open_still = window - self.settings.quiet_windows
                current = next(
                    (
                        o
                        for o in self.open.values()
                        if len(o.incident.services) < self.settings.max_incident_services
                        and (
                            (
                                o.last_window >= recent
                                and keys & (o.keys | ancestors(self.parents, o.keys))
                            )
                            or (o.last_window >= open_still and _alike(o, root, group))
                        )
                    ),
                    None,
                )
            same_service = current is not None and not same_root and _alike(current, root, group)
            services = {k.service for k in keys} | (
                {root.service} if not group.is_dependency else set()
            )
            pattern = pattern_of(group)
            severity = severity_of(
                self.settings, self.parents, pattern, group, services, window_spans
            )
            root_op = root
            if group.is_dependency and group.dependency_ops:
                root_op = Operation(
                    root.service, group.dependency_ops.most_common(1)[0][0], root.scope
                )
            lead_of_group = lead_finding(pattern, group)
            assert lead_of_group is not None  # a group always has a finding
            key, finding = lead_of_group
            if current is None:
                digest = hashlib.sha1(
                    f"{pattern}|{root.service}|{root.operation}|{root.scope}|{start_ns}".encode()
                ).hexdigest()[:16]
                quiet = 0.0
                if finding.family is Family.TRAFFIC:
                    quiet = self.stats[key].quiet_windows(self.settings)
                started = start_ns
                if quiet:
                    started = end_ns - int(quiet) * self.w
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
                    summary=summary_of(pattern, root_op, finding, group.front),
                    trace_ids=tuple(group.trace_ids),
                    example_span_id=group.example_span,
                    services=tuple(sorted(services)),
                    deploys=self.deploys.before(root.scope, services, started),
                    critical_path=critical_path(traces, group.trace_ids[:1]),
                    resource=tuple(split_scope(root.scope, self.settings.identity).items()),
                )
                opened = Open(incident, keys, window, key, finding, group.front)
                opened.shown_window = window
                self._measure_into(opened, accs, (own, ended), window, at_opening=True)
                self.open[root] = opened
                events.append(Event.incident(EventType.INCIDENT_OPENED, opened.incident))
                continue
            if same_root or same_service:
                # only evidence about its own root (or its root's service failing the same
                # way) keeps an incident open
                current.last_window = window
                current.healthy = 0
                current.keys |= keys
                current.front = current.front or group.front
            old = current.incident
            merged = tuple(sorted(set(old.services) | services))
            if len(merged) > self.settings.max_incident_services:
                merged = old.services
            # Only evidence about the incident's own root cause refines its pattern.
            refined = same_root and SPECIFICITY[pattern] < SPECIFICITY[old.pattern]
            if severity < old.severity or merged != old.services or refined:
                shown = pattern if refined else old.pattern
                summary, evidence = old.summary, old.evidence
                found = lead_finding(shown, group, strict=True) if same_root else None
                if found is not None:  # only evidence of its own kind, about its own root cause
                    lead_key, lead = found
                    summary = summary_of(shown, old.root_cause, lead, current.front)
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
                self._measure_into(current, accs, (own, ended), window, at_opening=True)
                events.append(Event.incident(EventType.INCIDENT_UPDATED, current.incident))
        for current in self.open.values():  # the evidence follows the fault
            if current.shown_window != window and self._measure_into(
                current, accs, (own, ended), window
            ):
                events.append(Event.incident(EventType.INCIDENT_UPDATED, current.incident))
            lead_acc = accs.get(current.lead)
            # its spans came, and showed nothing; unless they are as likely from its fault's
            # run (at a span or two a window, a fault in 40% of the spans shows nothing in
            # most windows: the run ends when its windows say it is over)
            if (
                current.last_window != window
                and lead_acc is not None
                and lead_acc.count
                and not running(current.lead)
            ):
                current.healthy += 1
        for root, current in list(self.open.items()):
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
                    current.incident, resolved_at_ns=(current.last_window + 1) * self.w
                )
                del self.open[root]
                events.append(Event.incident(EventType.INCIDENT_RESOLVED, resolved))
        return events

    def _measure_into(
        self,
        current: Open,
        accs: dict[Key, WindowAcc],
        own: tuple[OwnTimes, dict[Key, tuple[int, int]]],
        window: int,
        at_opening: bool = False,
    ) -> bool:
        """Add this window's measure of the incident's lead key to its evidence and series;
        whether the change is worth an update now (never ``at_opening``: an event is going
        out anyway, and it carries the finding's own value)."""
        old = current.incident
        evidence = old.evidence
        measured = self._measure(evidence, current.lead, current.finding.signature, accs, own)
        if measured is None:
            return False
        value, share_now, spans = measured
        if evidence.metric == "new_error_count" and not at_opening:
            current.counted += int(value)
        at = (window + 1) * self.w
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
            abs(observed - last_observed) > MOVED * scale or abs(share - last_share) >= SHARE_MOVED
        )
        if not moved or window - current.shown_window < UPDATE_WINDOWS:
            return False
        current.shown, current.shown_window = (observed, share), window
        # the summary tells the worst seen (the evidence holds the latest as well): one
        # updated as the fault ends must not read "error rate 0%"
        now = replace(
            current.finding,
            observed=peak,
            affected=current.finding.affected + current.counted,
        )
        summary = summary_of(old.pattern, old.root_cause, now, current.front)
        current.incident = replace(current.incident, summary=summary)
        return True

    def _measure(
        self,
        evidence: Evidence,
        key: Key,
        signature: str,
        accs: dict[Key, WindowAcc],
        own: tuple[OwnTimes, dict[Key, tuple[int, int]]],
    ) -> tuple[float, float, int] | None:
        """(value, share of the key's spans affected, weight) of an evidence metric in this
        window; None when the window cannot tell (no spans of the key). ``own``: the window's
        own times, and how many of each key's spans ended on an answer, of how many."""
        metric = evidence.metric
        if metric == "own_time_ms":
            times = [span[0] for span in own[0].get(key, ())]
            if not times:
                return None
            bar = own_bar(evidence.baseline * 1e6, self.settings)
            high = sum(1 for t in times if t > bar)
            # the middle as the finding took it (statistics'), not the window's upper middle
            return statistics.median(times) / 1e6, high / len(times), len(times)
        if metric == "abrupt_end_rate":
            k, n = own[1].get(key, (0, 0))
            return (k / n, k / n, n) if n else None
        acc = accs.get(key)
        stats = self.stats.get(key)
        if metric == "requests_per_window":
            n = acc.count if acc else 0
            expected = stats.expected_count(self.settings) if stats else 0.0
            return float(n), (max(0.0, 1 - n / expected) if expected else 0.0), 1
        if acc is None or not acc.count:
            return None
        n = acc.count
        if metric == "error_rate":
            return acc.errors / n, acc.errors / n, n
        if metric == "new_error_count":
            count = acc.signatures.get(signature, 0) if acc.signatures else 0
            return float(count), count / n, n
        if metric in ("p50_latency_ms", "max_latency_ms") and stats is not None:
            durations = acc.durations
            if not durations:
                return None
            # the median and its share slow, or the slowest span and its share far past the p99
            if metric == "p50_latency_ms":
                bar, value = stats.slow_above(self.settings), median(durations)
            else:
                slowest = acc.slowest
                bar = stats.far_above(self.settings)
                value = slowest[0][0] if slowest else max(durations)
            above = sum(1 for d in durations if d > bar)
            return value / 1e6, above / len(durations), n
        return None  # calls per trace: told by the findings alone


def _alike(o: Open, root: Operation, group: Group) -> bool:
    """Whether ``o`` is an incident of the group's root service failing the same way (the
    same family of findings), the group not a dependency's."""
    return (
        (o.incident.root_cause.service, o.incident.root_cause.scope) == (root.service, root.scope)
        and FAMILY_OF[o.incident.pattern] is FAMILY_OF[pattern_of(group)]
        and not group.is_dependency
    )
