"""The summary published when no model writes one: built from the incident's facts alone."""

from __future__ import annotations

from typing import Any

from ._redact import Redactor

MARK = "(Built from the detector's facts, not written by a model.)"

_NEXT_STEPS = {
    "error_burst": "look at {root}'s errors and logs from the start time; check what changed "
    "there (deploys, config, dependencies)",
    "latency_spike": "look at {root}'s slowest traces and its own work (CPU, locks, GC, pools) "
    "from the start time",
    "traffic_drop": "check whether clients still reach {root}: load balancer, DNS, routing, "
    "upstream callers, rate limits",
    "cascading_failure": "stabilise {root} first (roll back, fail over, shed load); the callers "
    "failing above it should recover with it",
    "slow_dependency": "check {root} itself: its load, slow queries, connections, and the "
    "network to it",
    "new_error": "read the new error's traces at {root}; it usually follows a deploy or a data "
    "change",
    "retry_storm": "cap the retries against {root} (backoff, budgets) and find why its calls fail",
    "latency_drift": "compare {root}'s latency with its versions and data growth over the last "
    "hours; look for leaks and growing queues",
}


def fallback_summary(incidents: list[dict[str, Any]], redactor: Redactor) -> str:
    """Each incident's parts (the answer structure), most severe first, then the mark."""
    ordered = sorted(incidents, key=lambda i: (i.get("severity", 5), i.get("detected_at", "")))
    paragraphs = []
    for number, inc in enumerate(ordered, start=1):
        root_cause = inc.get("root_cause") or {}
        service, operation = root_cause.get("service", ""), root_cause.get("operation", "")
        root = f"{service} {operation}".strip()
        ev = inc.get("evidence") or {}
        pattern = str(inc.get("pattern", ""))
        evidence = (
            f"SEV{inc.get('severity')} {pattern.replace('_', ' ')} at {root} (seen at "
            f"{inc.get('service')} {inc.get('operation')}). Evidence: {ev.get('metric')} "
            f"{ev.get('observed')} {ev.get('unit', '')} against a baseline of "
            f"{ev.get('baseline')}. Services affected: {', '.join(inc.get('services', []))}. "
            f"Started {inc.get('started_at')}, detected {inc.get('detected_at')}."
        )
        deploys = inc.get("deploys") or []
        if deploys:
            evidence += (
                " Recent deploys: "
                + "; ".join(
                    f"{d.get('service')} {d.get('from')} -> {d.get('to')} at {d.get('at')}"
                    for d in deploys[:3]
                )
                + "."
            )
        lines = [f"Incident {number}:"] if len(ordered) > 1 else []
        lines += [
            f"Root cause: {service} · {operation} (the detector's estimate)",
            f"Evidence: {evidence}",
            "Hypotheses: none; these are the detector's facts only.",
        ]
        steps = _NEXT_STEPS.get(pattern)
        lines.append("Next steps: " + (steps.format(root=root) + "." if steps else "-"))
        lines.append("Confidence: medium")
        paragraphs.append(redactor.redact("\n".join(lines)))
    paragraphs.append(MARK)
    return "\n\n".join(paragraphs)
