"""What the benchmark scripts share: free ports and where results are written."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_command(grpc_port: int, http_port: int, *flags: str) -> list[str]:
    """spanwatchd without the LLM on loopback ports (the WebSocket on a free one, unless
    ``flags`` name it: a daemon already running on the default port must not stop a
    benchmark), with ``flags`` after."""
    return [
        sys.executable,
        "-m",
        "spanwatch.daemon",
        "--no-llm",
        "--grpc-listen",
        f"127.0.0.1:{grpc_port}",
        "--http-listen",
        f"127.0.0.1:{http_port}",
        "--ws-listen",
        f"127.0.0.1:{free_port()}",
        *flags,
    ]


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
