"""spanwatch: an OTLP trace receiver that detects anomalies and explains them."""

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

from spanwatch.errors import SpanwatchError

__all__ = ["SpanwatchError", "__version__"]
