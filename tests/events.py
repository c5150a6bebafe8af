"""Builders of incidents and events for the publishing tests."""

from __future__ import annotations

from spanwatch.model import (
    Event,
    EventType,
    Evidence,
    Incident,
    Operation,
    Pattern,
    Severity,
)

T0 = 1_764_000_000_123_456_789


def incident(
    n: int = 1, severity: int = 2, service: str = "checkout", pattern: Pattern = Pattern.ERROR_BURST
) -> Incident:
    return Incident(
        id=f"inc-{n}",
        severity=Severity(severity),
        pattern=pattern,
        service=service,
        operation="POST /checkout",
        root_cause=Operation("payments", "POST /charge"),
        started_at_ns=T0,
        detected_at_ns=T0 + 30_000_000_000,
        evidence=Evidence("error_rate", 0.42, 0.01, "ratio"),
        summary=f"{service}: error rate 42% (baseline 1%)",
        trace_ids=(bytes.fromhex("5b8efff798038103d269b633813fc60c"),),
        example_span_id=bytes.fromhex("eee19b7ec3c1b174"),
        services=(service, "payments"),
    )


def opened(n: int = 1, **kwargs: object) -> Event:
    return Event.incident(EventType.INCIDENT_OPENED, incident(n, **kwargs))  # type: ignore[arg-type]


def analysis_events(analysis_id: str, incident_ids: list[str], tokens: list[str]) -> list[Event]:
    events = [
        Event(
            EventType.ANALYSIS_STARTED,
            {"analysis_id": analysis_id, "incident_ids": incident_ids, "model": "llama3.2:1b"},
        )
    ]
    events += [
        Event(EventType.ANALYSIS_TOKEN, {"analysis_id": analysis_id, "text": t}) for t in tokens
    ]
    events.append(
        Event(
            EventType.ANALYSIS_COMPLETED,
            {
                "analysis_id": analysis_id,
                "incident_ids": incident_ids,
                "text": "".join(tokens),
                "model": "llama3.2:1b",
                "fallback": False,
            },
        )
    )
    return events
