"""Incidents, analyses, ratings and the event envelope, as plain data.

``to_dict()`` gives the JSON shape of DESIGN contract 5; the protobuf schema in
``proto/spanwatch/v1/events.proto`` describes the same shape (and a test holds them together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from spanwatch.errors import SpanwatchError


class Severity(IntEnum):
    """SEV1 is the worst."""

    SEV1 = 1
    SEV2 = 2
    SEV3 = 3
    SEV4 = 4
    SEV5 = 5


class Pattern(StrEnum):
    ERROR_BURST = "error_burst"
    LATENCY_SPIKE = "latency_spike"
    TRAFFIC_DROP = "traffic_drop"
    CASCADING_FAILURE = "cascading_failure"
    SLOW_DEPENDENCY = "slow_dependency"
    NEW_ERROR = "new_error"
    RETRY_STORM = "retry_storm"
    LATENCY_DRIFT = "latency_drift"


class EventType(StrEnum):
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_UPDATED = "incident.updated"
    INCIDENT_RESOLVED = "incident.resolved"
    ANALYSIS_STARTED = "analysis.started"
    ANALYSIS_TOKEN = "analysis.token"
    ANALYSIS_COMPLETED = "analysis.completed"
    ANALYSIS_FAILED = "analysis.failed"
    RATING_RECORDED = "rating.recorded"


class RatingValue(StrEnum):
    GOOD = "good"
    BAD = "bad"


def rfc3339_ns(unix_ns: int) -> str:
    """``2026-11-25T03:58:36.799824123Z``: RFC 3339, UTC, nanoseconds."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


@dataclass(frozen=True, slots=True)
class Operation:
    service: str
    operation: str
    # the service's scope (resource identity, see make_scope): part of what tells one root
    # cause from another, not of the wire shape
    scope: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"service": self.service, "operation": self.operation}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was measured against what was expected, e.g. error rate 0.42 vs 0.01.

    While an incident is open, ``observed`` is the latest window's value, ``peak`` the worst
    seen so far (the highest, or for a traffic drop the lowest) and ``share`` the share of the
    root cause's spans that the latest window found affected (failed, slow, or missing)."""

    metric: str
    observed: float
    baseline: float
    unit: str = ""
    peak: float = 0.0
    share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "observed": self.observed,
            "baseline": self.baseline,
            "unit": self.unit,
            "peak": self.peak,
            "share": self.share,
        }


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """The evidence's metric in one window of an open incident (event time: the window's end)."""

    at_ns: int
    observed: float
    baseline: float

    def to_dict(self) -> dict[str, Any]:
        return {"at": rfc3339_ns(self.at_ns), "observed": self.observed, "baseline": self.baseline}


@dataclass(frozen=True, slots=True)
class Deploy:
    """A service's version changed (``service.version`` of its spans), at event time."""

    service: str
    old_version: str
    new_version: str
    at_ns: int

    def to_dict(self) -> dict[str, str]:
        return {
            "service": self.service,
            "from": self.old_version,
            "to": self.new_version,
            "at": rfc3339_ns(self.at_ns),
        }


@dataclass(frozen=True, slots=True)
class PathStep:
    """One span on an example trace's critical path, from the entry point down."""

    service: str
    operation: str
    kind: str
    duration_ms: float
    error: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "operation": self.operation,
            "kind": self.kind,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    severity: Severity
    pattern: Pattern
    service: str
    operation: str
    root_cause: Operation
    started_at_ns: int
    detected_at_ns: int
    evidence: Evidence
    summary: str
    trace_ids: tuple[bytes, ...] = ()
    example_span_id: bytes = b""
    services: tuple[str, ...] = ()
    resolved_at_ns: int = 0
    deploys: tuple[Deploy, ...] = ()
    critical_path: tuple[PathStep, ...] = ()
    # the identity attributes that are set, e.g. (("deployment.environment.name", "prod"),)
    resource: tuple[tuple[str, str], ...] = ()
    # the evidence's metric, window by window, for the last SERIES_POINTS windows
    series: tuple[SeriesPoint, ...] = ()

    @property
    def status(self) -> str:
        return "resolved" if self.resolved_at_ns else "open"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "severity": int(self.severity),
            "pattern": str(self.pattern),
            "service": self.service,
            "operation": self.operation,
            "root_cause": self.root_cause.to_dict(),
            "started_at": rfc3339_ns(self.started_at_ns),
            "detected_at": rfc3339_ns(self.detected_at_ns),
            "status": self.status,
            "trace_ids": [t.hex() for t in self.trace_ids],
            "evidence": self.evidence.to_dict(),
            "summary": self.summary,
            "services": list(self.services),
            "namespace": "",
            "environment": "",
            "resource": dict(self.resource),
            "series": [point.to_dict() for point in self.series],
        }
        for name, value in self.resource:
            if name == "service.namespace":
                out["namespace"] = value
            elif name == "deployment.environment.name":
                out["environment"] = value
        if self.trace_ids and self.example_span_id:
            out["example"] = {
                "trace_id": self.trace_ids[0].hex(),
                "span_id": self.example_span_id.hex(),
            }
        if self.resolved_at_ns:
            out["resolved_at"] = rfc3339_ns(self.resolved_at_ns)
        if self.deploys:
            out["deploys"] = [d.to_dict() for d in self.deploys]
        if self.critical_path:
            out["critical_path"] = [step.to_dict() for step in self.critical_path]
        return out


@dataclass(frozen=True, slots=True)
class Rating:
    analysis_id: str
    rating: RatingValue
    correction: str = ""
    rated_at_ns: int = 0
    rater: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "rating": str(self.rating),
            "correction": self.correction,
            "rated_at": rfc3339_ns(self.rated_at_ns),
            "rater": self.rater,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One message for subscribers: its type and its fields. ``seq`` is stamped by the hub."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def incident(cls, kind: EventType, incident: Incident) -> Event:
        return cls(str(kind), {"incident": incident.to_dict()})


MAX_CORRECTION_CHARS = 20_000


class InvalidRating(SpanwatchError, ValueError):
    """A rating request that cannot be accepted as it is (HTTP 400)."""


class UnknownAnalysis(SpanwatchError, LookupError):
    """No (finished) analysis with that id (HTTP 404)."""


class StorageUnavailable(SpanwatchError):
    """The rating could not be stored now (a full, read-only or busy database: HTTP 503)."""


def parse_rating(body: Any) -> tuple[str, RatingValue, str]:
    """``(analysis_id, rating, correction)`` from a rating request (REST body or WebSocket)."""
    if not isinstance(body, dict):
        raise InvalidRating("a rating must be a JSON object")
    analysis_id = body.get("analysis_id")
    if not isinstance(analysis_id, str) or not analysis_id.strip():
        raise InvalidRating("analysis_id must be a non-empty string")
    value = body.get("rating")
    try:
        rating = RatingValue(str(value)) if isinstance(value, str) else RatingValue("")
    except ValueError:
        raise InvalidRating(f"rating must be 'good' or 'bad', not {value!r}") from None
    correction = body.get("correction") or ""
    if not isinstance(correction, str):
        raise InvalidRating("correction must be a string")
    if len(correction) > MAX_CORRECTION_CHARS:
        raise InvalidRating(f"correction is longer than {MAX_CORRECTION_CHARS} characters")
    if rating is RatingValue.GOOD and correction.strip():
        raise InvalidRating("a correction goes with a 'bad' rating, not a 'good' one")
    return analysis_id.strip(), rating, correction.strip()
