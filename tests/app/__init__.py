"""A small shop of three Flask services, ``frontend`` → ``orders`` → ``inventory`` (SQLite
behind the last two), traced by the real OpenTelemetry instrumentations (Flask, requests,
sqlite3), with faults switched on and off in its own code at run time.

- ``python -m tests.app --target HOST:PORT``: run it, exporting OTLP/gRPC to a receiver, under
  load and probes (``--help``);
- ``python -m tests.app.record``: re-record ``tests/fixtures/app/`` (see its README).
"""

from tests.app._cluster import FAULT_SERVICE, SEMCONV_MODES, SEMCONV_OPT_IN, Cluster
from tests.app._load import SCRIPT, Load, Request, call, probe, run_script
from tests.app._services import FAULT_KINDS

__all__ = [
    "FAULT_KINDS",
    "FAULT_SERVICE",
    "SCRIPT",
    "SEMCONV_MODES",
    "SEMCONV_OPT_IN",
    "Cluster",
    "Load",
    "Request",
    "call",
    "probe",
    "run_script",
]
