"""Plain data types that every package shares. Standard library only."""

from ._incidents import (
    Deploy,
    Event,
    EventType,
    Evidence,
    Incident,
    InvalidRating,
    Operation,
    PathStep,
    Pattern,
    Rating,
    RatingValue,
    Severity,
    UnknownAnalysis,
    parse_rating,
    rfc3339_ns,
)
from ._spans import SEMCONV_COLUMNS, Span, SpanBatch, SpanKind, StatusCode

__all__ = [
    "SEMCONV_COLUMNS",
    "Deploy",
    "Event",
    "EventType",
    "Evidence",
    "Incident",
    "InvalidRating",
    "Operation",
    "PathStep",
    "Pattern",
    "Rating",
    "RatingValue",
    "Severity",
    "Span",
    "SpanBatch",
    "SpanKind",
    "StatusCode",
    "UnknownAnalysis",
    "parse_rating",
    "rfc3339_ns",
]
