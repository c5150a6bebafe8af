"""Simulated faults through a daemon process into a real Alertmanager, configured from the env."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess
from tests.tools import Alertmanager, Recorder, alertmanager, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def am(tmp_path: Path) -> Iterator[tuple[Alertmanager, Recorder]]:
    with alertmanager(tmp_path) as pair:
        yield pair


def test_a_simulated_error_burst_pages_through_alertmanager(
    am: tuple[Alertmanager, Recorder], daemon_process: Callable[..., DaemonProcess]
) -> None:
    """SPANWATCH_ALERTS__ALERTMANAGER_URL is all it takes: the fault's incident becomes an
    active alert with its labels, and Alertmanager notifies its receiver."""
    manager, receiver = am
    proc = daemon_process("--no-llm", env={"SPANWATCH_ALERTS__ALERTMANAGER_URL": manager.url})
    proc.wait_ready()
    # At 20x, event time stays within a minute of the wall clock, and the burst (from 600 s on)
    # is still on when the simulation stops at 680 s.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanwatch.cli",
            "simulate",
            "--target",
            f"127.0.0.1:{proc.grpc_port}",
        ]
        + ["--speed", "20", "--scenario", "error_burst", "--duration", "680"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    def ours() -> list[dict[str, Any]]:
        return [
            a
            for a in manager.get("/api/v2/alerts")
            if a["labels"].get("alertname") == "SpanwatchErrorBurst"
        ]

    alerts = wait_for(ours, timeout=30, what="the error burst's alert")
    labels = alerts[0]["labels"]
    assert labels["pattern"] == "error_burst"
    assert labels["severity"] in {"SEV1", "SEV2", "SEV3"}
    assert labels["root_cause_service"]
    assert alerts[0]["generatorURL"].startswith(f"http://127.0.0.1:{proc.ws_port}/?incident=")
    wait_for(receiver.bodies, timeout=15, what="Alertmanager's notification")
    assert proc.terminate() == 0
