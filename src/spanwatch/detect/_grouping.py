"""Grouping and severity: a window's findings, grouped by root cause (one incident per root),
each group's pattern, severity, lead finding and summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from spanwatch.model import Operation, Pattern, Severity

from ._keys import Key
from ._rootcause import ANSWER, EDGE
from ._settings import Settings
from ._stats import EXAMPLES, Family, Finding, WindowAcc
from ._structure import CALLS, ancestors

# Lower is more specific: an open incident takes a more specific pattern when evidence for it
# arrives (e.g. errors first, then the retries behind them).
SPECIFICITY = {
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
FAMILY_OF = {
    Pattern.RETRY_STORM: Family.RETRY,
    Pattern.NEW_ERROR: Family.NEW_ERROR,
    Pattern.ERROR_BURST: Family.ERRORS,
    Pattern.CASCADING_FAILURE: Family.ERRORS,
    Pattern.LATENCY_SPIKE: Family.LATENCY,
    Pattern.LATENCY_DRIFT: Family.LATENCY,
    Pattern.SLOW_DEPENDENCY: Family.LATENCY,
    Pattern.TRAFFIC_DROP: Family.TRAFFIC,
}


@dataclass(slots=True)
class Group:
    root: Operation
    is_dependency: bool
    findings: list[tuple[Key, Finding]] = field(default_factory=list)
    cascading: bool = False
    # the calls into the root were slow or failed while its own spans were not: the trouble
    # is in front of it (network, ingress, a proxy), on the EDGE from its callers; or its
    # callers failed on its ANSWER
    front: str = ""
    dependency_ops: Counter[str] = field(default_factory=Counter)
    trace_ids: list[bytes] = field(default_factory=list)
    example_span: bytes = b""


# a finding's root cause: (root, is a dependency, cascading, EDGE/ANSWER/"", examples), given
# (key, finding, its key's window, the keys that dropped, the keys that stopped short)
FindCause = Callable[
    [Key, Finding, WindowAcc | None, set[Key], dict[Key, Key]],
    tuple[Operation, bool, bool, str, list[tuple[bytes, bytes]]],
]


def group_findings(
    findings: dict[Key, list[Finding]],
    accs: dict[Key, WindowAcc],
    stopped: dict[Key, Key],
    parents: dict[Key, set[Key]],
    find_cause: FindCause,
    failing: dict[Key, Operation] | None = None,
    quiet: set[Key] | None = None,
    quiet_roots: dict[Key, Operation] | None = None,
) -> dict[Operation, Group]:
    """The window's findings by root cause (``find_cause``); a dependency's by the system
    alone, whatever operations of it were slow. ``failing``: keys that fail now without a
    finding this window (an open incident's, with its root); ``quiet``: keys whose traffic is
    as low as a drop's, shown yet or not (a drop is walked up through them); ``quiet_roots``:
    keys of open traffic drops still quiet, with their roots (a drop below one is theirs)."""
    groups: dict[Operation, Group] = {}
    dropping = {k for k, fs in findings.items() if any(f.family is Family.TRAFFIC for f in fs)}
    dropping |= quiet or set()
    # where each failing key's errors were traced to: a drop below a caller that fails
    # now is that failure's (a handler that fails stops short: its later calls vanish)
    failing_root: dict[Key, Operation] = dict(failing or {})
    # errors first, so that the drops they explain find their roots
    ordered = sorted(
        ((key, finding) for key, found in findings.items() for finding in found),
        key=lambda kf: kf[1].family is Family.TRAFFIC,
    )
    for key, finding in ordered:
        acc = accs.get(key)
        explained = None
        if finding.family is Family.TRAFFIC:
            explained = _failing_caller(parents, key, failing_root) if failing_root else None
            if explained is None and quiet_roots:
                explained = _failing_caller(parents, key, quiet_roots)
        examples: list[tuple[bytes, bytes]] = []
        if explained is not None:
            root, is_dep, cascading, front = explained, False, False, ""
        else:
            root, is_dep, cascading, front, examples = find_cause(
                key, finding, acc, dropping, stopped
            )
        if finding.family in (Family.ERRORS, Family.NEW_ERROR) and not is_dep:
            failing_root.setdefault(key, root)
        dependency_op = ""
        if is_dep:  # one incident per dependency, whatever operations were slow
            root, dependency_op = Operation(root.service, "", root.scope), root.operation
        group = groups.get(root)
        if group is None:
            group = groups[root] = Group(root, is_dep)
        if dependency_op:
            group.dependency_ops[dependency_op] += 1
        group.findings.append((key, finding))
        group.cascading |= cascading
        group.front = group.front or front
        for trace_id, span_id in examples:
            if len(group.trace_ids) < EXAMPLES and trace_id not in group.trace_ids:
                group.trace_ids.append(trace_id)
                group.example_span = group.example_span or span_id
    return groups


def _failing_caller(
    parents: dict[Key, set[Key]], key: Key, failing_root: dict[Key, Operation]
) -> Operation | None:
    """The root of the errors of a caller of ``key`` (directly or not) that fails in this
    window, if one does (the first in key order, so that any batching gives the same)."""
    callers = [k for k in ancestors(parents, {key}) if k in failing_root]
    return failing_root[min(callers)] if callers else None


def pattern_of(group: Group) -> Pattern:
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
        if all(f.drift and not f.step for _, f in group.findings if f.family is Family.LATENCY):
            return Pattern.LATENCY_DRIFT
        return Pattern.LATENCY_SPIKE
    return Pattern.TRAFFIC_DROP


def severity_of(
    s: Settings,
    parents: dict[Key, set[Key]],
    pattern: Pattern,
    group: Group,
    services: set[str],
    window_spans: int,
) -> Severity:
    """The pattern's priority, a step worse for a large deviation and for a wide blast radius
    (an entry point hit: a key nothing calls), a step milder for a small share affected."""
    level = 2 + _PRIORITY[pattern]  # SEV2 for a P0 pattern before those steps
    big = any(
        (f.family is Family.ERRORS and f.observed >= s.severe_error_rate)
        or (f.family is Family.LATENCY and f.magnitude >= s.severe_latency_ratio)
        or (f.family is Family.TRAFFIC and f.magnitude >= s.severe_drop)
        or (f.family is Family.RETRY and f.magnitude >= s.severe_retries)
        for _, f in group.findings
    )
    entry_hit = any(not parents.get(k) and k.is_entry_kind for k, _ in group.findings)
    affected = sum(f.affected for _, f in group.findings)
    level -= big
    level -= entry_hit or len(services) >= s.wide_services
    if window_spans and affected / window_spans < s.minor_share and not entry_hit:
        level += 1
    return Severity(min(5, max(1, level)))


def lead_finding(
    pattern: Pattern, group: Group, strict: bool = False
) -> tuple[Key, Finding] | None:
    """The strongest finding of the pattern's own kind, on the root's own key if it has one:
    what the evidence and summary show.

    Without one: the strongest finding of any kind, or None when ``strict``."""
    family = FAMILY_OF[pattern]
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


def summary_of(pattern: Pattern, root: Operation, finding: Finding, front: str = "") -> str:
    where = f"{root.service} {root.operation}".strip()
    if front == EDGE:  # its callers saw it, its own spans did not
        where = (
            f"the calls into {where} (network or ingress in front of it; its own spans are normal)"
        )
    elif front == ANSWER:
        where = (
            f"the answers of {where} (its callers fail on them as they arrive; its own spans "
            "are normal: a wrong result)"
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
    if finding.metric == "own_time_ms":
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: its own time (outside its calls) "
            f"median {finding.observed:.1f} ms (baseline {finding.baseline:.1f} ms; its calls "
            "are not slower)"
        )
    if finding.metric == "max_latency_ms":
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: spans up to "
            f"{finding.observed:.1f} ms, {finding.affected} of them far past its p99 "
            f"({finding.baseline:.1f} ms)"
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
    if finding.metric == "abrupt_end_rate":
        ending = (
            "callers' spans end as its answer comes"
            if front == ANSWER
            else "spans end as their last call answers"
        )
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: {finding.observed:.0%} of its "
            f"{ending}, with no work of their own after it (usually {finding.baseline:.1%})"
        )
    if finding.metric == "new_call_count":
        called = finding.signature.removeprefix(CALLS)
        return (
            f"{pattern.value.replace('_', ' ')} at {where}: its spans now call {called}, "
            f"never seen below it before ({finding.affected} times)"
        )
    if finding.family is Family.NEW_ERROR:
        return f"new error at {where}: {finding.signature} ({finding.affected} times)"
    return f"retry storm at {where}: up to {finding.observed:.0f} calls per trace"
