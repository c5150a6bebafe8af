"""Plain data types that every package shares. Standard library only."""

from ._spans import SEMCONV_COLUMNS, Span, SpanBatch, SpanKind, StatusCode

__all__ = ["SEMCONV_COLUMNS", "Span", "SpanBatch", "SpanKind", "StatusCode"]
