"""spanwatch: an OTLP trace receiver that detects anomalies and explains them."""

__version__ = "0.1.0"
