"""Grounding checks: a write-up read against the facts of the incidents it explains.

Deterministic, no model involved. For every analysis:

- **names**: every service and operation the answer names exists in the incidents or their
  traces (the incident's service, root cause, blast radius, critical path, deploys). Named means:
  the root-cause line, ``X service``, identifiers with a service-like suffix (``orders-db``),
  back-quoted names, and ``GET /path``-style or ``pkg.Service/Method`` operations.
- **numbers**: every number quoted matches the evidence, within the precision it is written with
  (42% matches 0.4213 as a ratio; 1.2 s matches 1200 ms; 42x matches 0.42 against 0.01).
  Small counts (0-10 without a unit), timestamps, versions and numbers inside names are not
  quotes of evidence and are skipped.
- **root cause**: the answer's root cause agrees with the detector's, or says why not on its
  line (``because``, ``rather than``, ...), or is ``inconclusive``.

An answer that fails is marked (``passed: false`` with its problems), never hidden.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._answer import Answer, Section, parse_answer, section_dict, split_root

_SERVICE_WORD = re.compile(r"\b([A-Za-z][\w-]*)\s+(?:service|svc|microservice)\b", re.IGNORECASE)
_SUFFIXED = re.compile(
    r"\b[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*[-_](?:db|database|service|svc|api|cache|queue|"
    r"gateway|worker|server|proxy|broker|redis|postgres|mysql|mongo|kafka)\b"
)
_BACKTICKED = re.compile(r"`([^`\s]{2,80})`")
_OPERATION = re.compile(
    r"\b(?:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)\s+/[^\s,;)`'\"]*|"
    r"\b[A-Za-z_][\w.]*\.[A-Z]\w*/[A-Z]\w*\b"
)
_NUMBER = re.compile(
    r"(?<![\w.:/@#+-])(\d+(?:\.\d+)?)"
    r"(\s*(?:%|ms\b|milliseconds?\b|s\b|secs?\b|seconds?\b|x\b|×|times\b))?"
)
# words that say a root cause other than the detector's is reasoned, not a slip
_EXPLAINED = (
    "because",
    "since",
    "rather than",
    "instead of",
    "not the detector",
    "detector",
    "although",
    "though",
    "but ",
    "as the",
    "given that",
)
_NOT_SERVICES = frozenset(
    [
        "the",
        "a",
        "an",
        "this",
        "that",
        "each",
        "every",
        "one",
        "same",
        "other",
        "whole",
        "affected",
        "downstream",
        "upstream",
        "calling",
        "failing",
        "root",
        "entry",
        "its",
        "their",
        "your",
        "our",
        "any",
        "which",
        "called",
        "slow",
        "failing",
    ]
)
ROOT_CAUSE_OK = ("agrees", "differs_explained", "inconclusive")


@dataclass(frozen=True, slots=True)
class Facts:
    services: frozenset[str]
    operations: frozenset[str]
    numbers: tuple[float, ...]
    roots: tuple[tuple[str, str], ...]  # the detector's root cause of each incident, in order


def facts_of(incidents: list[dict[str, Any]], facts_text: str = "") -> Facts:
    """What an answer may name and quote: the incidents' fields and the prompt's facts."""
    services: set[str] = set()
    operations: set[str] = set()
    numbers: list[float] = []
    roots: list[tuple[str, str]] = []
    for inc in incidents:
        root = inc.get("root_cause") or {}
        roots.append((str(root.get("service", "")), str(root.get("operation", ""))))
        services.update([str(inc.get("service", "")), roots[-1][0], *inc.get("services", [])])
        operations.update([str(inc.get("operation", "")), roots[-1][1]])
        for step in inc.get("critical_path") or []:
            services.add(str(step.get("service", "")))
            operations.add(str(step.get("operation", "")))
            numbers.append(float(step.get("duration_ms") or 0))
        for deploy in inc.get("deploys") or []:
            services.add(str(deploy.get("service", "")))
        services.update(str(v) for k, v in (inc.get("resource") or {}).items() if "service" in k)
        ev = inc.get("evidence") or {}
        observed, baseline = _float(ev.get("observed")), _float(ev.get("baseline"))
        for value in (observed, baseline):
            if value is not None:
                numbers.append(value)
                if ev.get("unit") == "ratio":
                    numbers.append(value * 100)
        for name in ("peak", "share"):  # the latest evidence of an open incident
            value = _float(ev.get(name))
            if value:
                numbers.append(value)
                if ev.get("unit") == "ratio" or name == "share":
                    numbers.append(value * 100)
        if observed is not None and baseline:
            numbers += [observed / baseline, observed - baseline]
            if ev.get("unit") == "ratio":
                numbers.append((observed - baseline) * 100)
        numbers += [float(inc.get("severity", 0)), float(len(inc.get("services", [])))]
        took = _seconds_between(inc.get("started_at"), inc.get("detected_at"))
        if took is not None:  # "detected 30 s after it started"
            numbers += [took, took * 1000, took / 60]
        for text in (str(inc.get("summary", "")), facts_text):
            numbers += [n for n, _ in _numbers(text)]
    return Facts(
        frozenset(s for s in services if s),
        frozenset(o for o in operations if o),
        tuple(numbers),
        tuple(roots),
    )


def _seconds_between(start: Any, end: Any) -> float | None:
    from datetime import datetime

    def parse(stamp: Any) -> datetime | None:
        match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?Z?", str(stamp or ""))
        if not match:
            return None
        fraction = (match.group(2) or "0")[:6].ljust(6, "0")
        try:
            return datetime.fromisoformat(f"{match.group(1)}.{fraction}+00:00")
        except ValueError:
            return None

    a, b = parse(start), parse(end)
    return (b - a).total_seconds() if a is not None and b is not None else None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _numbers(text: str) -> list[tuple[float, str]]:
    """(value, unit) of each number quoted in ``text``; not those inside dates, versions, names."""
    out: list[tuple[float, str]] = []
    for match in _NUMBER.finditer(text):
        after = text[match.end(1) : match.end(1) + 2]
        if re.match(r"[.:/-]\d|[A-Za-z_]", after) and not match.group(2):
            continue  # 2025-11-24, 10:42, 1.4.2, 5xx, v2 ...
        if re.search(r"(?i)\b(?:http|status|code)\s*$", text[: match.start(1)]):
            continue  # HTTP 503, status 429: a protocol's code, not a measure
        unit = (match.group(2) or "").strip().lower()
        out.append((float(match.group(1)), unit))
    return out


def _decimals(text_value: float) -> int:
    text = repr(text_value)
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def _matches(value: float, unit: str, pool: Iterable[float]) -> bool:
    """Whether ``value`` (as written, with ``unit``) is one of ``pool`` at its precision."""
    tolerance = 0.5 * 10 ** -_decimals(value)
    candidates = [(value, tolerance)]
    if unit == "%":
        candidates.append((value / 100, tolerance / 100))
    elif unit in ("s", "sec", "secs", "second", "seconds"):
        candidates.append((value * 1000, tolerance * 1000))
    elif unit in ("ms", "millisecond", "milliseconds"):
        candidates.append((value / 1000, tolerance / 1000))
    return any(
        abs(want - have) <= max(slack, 0.02 * abs(have))
        for have in pool
        for want, slack in candidates
    )


def _named_services(text: str) -> set[str]:
    found = {m.group(1) for m in _SERVICE_WORD.finditer(text)}
    found = {s for s in found if s.lower() not in _NOT_SERVICES}
    found.update(m.group(0) for m in _SUFFIXED.finditer(text))
    for m in _BACKTICKED.finditer(text):
        name = m.group(1).strip(".,:")
        if not _OPERATION.fullmatch(name) and not re.fullmatch(r"[\d.%a-z]*\d[\d.%a-z]*", name):
            found.add(name)
    return found


def _known(name: str, known: Iterable[str]) -> bool:
    low = name.lower().strip(".,:;`'\"")
    for k in known:
        k = k.lower()
        if low in (k, k + "s", k.rstrip("s")) or k in (low + "s", low.rstrip("s")):
            return True
    return False


def _operation_known(op: str, known: Iterable[str]) -> bool:
    low = op.lower().strip(".,:;`'\"")
    return any(low == k.lower() or (low and low in k.lower()) for k in known)


@dataclass(frozen=True, slots=True)
class Checked:
    answer: Answer
    parts: list[dict[str, Any]]
    grounding: dict[str, Any]


def check_answer(
    text: str, incidents: list[dict[str, Any]], facts_text: str = "", ids: Iterable[str] = ()
) -> Checked:
    """Parse ``text`` and check it against ``incidents`` (in prompt order)."""
    answer = parse_answer(text)
    facts = facts_of(incidents, facts_text)
    incident_ids = list(ids) or [str(i.get("id", "")) for i in incidents]
    unknown_services: list[str] = []
    unknown_operations: list[str] = []
    unmatched: list[str] = []
    problems: list[str] = []
    verdicts: list[str] = []
    parts: list[dict[str, Any]] = []
    for section in answer.sections:
        where = f"incident {section.incident}: " if section.incident else ""
        service, operation = split_root(section.root_cause, set(facts.services))
        index = section.incident - 1 if section.incident else 0
        incident_id = incident_ids[index] if 0 <= index < len(incident_ids) else ""
        parts.append(section_dict(section, incident_id, service, operation))
        if section.missing:
            problems.append(f"{where}missing or unreadable: {', '.join(section.missing)}")
        body = "\n".join(
            [section.root_cause, section.evidence, section.hypotheses, *section.next_steps]
        )
        named = _named_services(body)
        if section.root_cause and not section.inconclusive and service:
            named.add(service)
        for name in sorted(named):
            if not _known(name, facts.services) and name not in unknown_services:
                unknown_services.append(name)
        ops = {m.group(0).rstrip(".,") for m in _OPERATION.finditer(body)}
        if operation and not section.inconclusive and re.search(r"[/.]", operation):
            ops.add(operation)
        for op in sorted(ops):
            if not _operation_known(op, facts.operations) and op not in unknown_operations:
                unknown_operations.append(op)
        for value, unit in _numbers(body):
            if (value <= 10 and not unit) or _matches(value, unit, facts.numbers):
                continue
            quoted = f"{value:g}{unit}"
            if quoted not in unmatched:
                unmatched.append(quoted)
        verdict = _root_verdict(section, service, operation, facts, index)
        verdicts.append(verdict)
        if verdict not in ROOT_CAUSE_OK:
            detector = " · ".join(facts.roots[index]) if index < len(facts.roots) else "?"
            problems.append(
                f"{where}root cause {verdict.replace('_', ' ')} (the detector's: {detector})"
            )
    if unknown_services:
        problems.append("services not in the incident: " + ", ".join(unknown_services))
    if unknown_operations:
        problems.append("operations not in the incident: " + ", ".join(unknown_operations))
    if unmatched:
        problems.append("numbers not in the evidence: " + ", ".join(unmatched))
    order = ("missing", "differs_unexplained", "inconclusive", "differs_explained", "agrees")
    root = min(verdicts or ["missing"], key=order.index)
    grounding = {
        "passed": answer.valid and not problems,
        "structure_valid": answer.valid,
        "unknown_services": unknown_services,
        "unknown_operations": unknown_operations,
        "unmatched_numbers": unmatched,
        "root_cause": root,
        "problems": problems,
    }
    return Checked(answer, parts, grounding)


def _root_verdict(section: Section, service: str, operation: str, facts: Facts, index: int) -> str:
    if not section.root_cause:
        return "missing"
    if section.inconclusive:
        return "inconclusive"
    roots = [facts.roots[index]] if section.incident and index < len(facts.roots) else facts.roots
    for root_service, root_operation in roots:
        if service.lower() == root_service.lower() and (
            not operation
            or not root_operation
            or operation.lower() in root_operation.lower()
            or root_operation.lower() in operation.lower()
        ):
            return "agrees"
    line = section.root_cause.lower()
    if any(word in line for word in _EXPLAINED):
        return "differs_explained"
    return "differs_unexplained"
