"""The detector inside a running daemon: simulated OTLP in, incidents out on the WebSocket."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from tests.conftest import DaemonProcess, simulate


def _incident_messages(proc: DaemonProcess, until: str) -> list[dict[str, Any]]:
    """Messages from the start of the stream up to the first of type ``until``."""

    async def read() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        url = f"ws://127.0.0.1:{proc.ws_port}/events?since=0"
        async with connect(url, max_queue=None) as ws:
            while not messages or messages[-1]["type"] != until:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                assert len(messages) < 200, [m["type"] for m in messages]
        return messages

    return asyncio.run(read())


def _metric(proc: DaemonProcess, name: str) -> float:
    with urllib.request.urlopen(f"{proc.http_url}/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_simulated_fault_becomes_an_incident_on_the_websocket(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """An error burst sent over OTLP opens, then resolves, an incident with its root cause."""
    proc = daemon_process("--no-llm")
    proc.wait_ready()
    simulate(proc, "error_burst", 1000)
    messages = _incident_messages(proc, "incident.resolved")
    opened, resolved = messages[0], messages[-1]
    assert opened["type"] == "incident.opened"
    # between them, only updates of the same incident (its evidence as the fault goes on)
    assert {m["type"] for m in messages[1:-1]} <= {"incident.updated"}
    assert {m["incident"]["id"] for m in messages} == {opened["incident"]["id"]}
    incident = opened["incident"]
    assert incident["pattern"] == "error_burst"
    assert incident["root_cause"] == {"service": "payments", "operation": "POST /v1/charges"}
    assert incident["severity"] <= 3
    assert resolved["incident"]["id"] == incident["id"]
    assert proc.terminate() == 0
    assert (proc.data_dir / "detector.pickle").exists()


def test_restart_restores_the_detector_from_its_snapshot(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """After a restart the baselines are back: keys are tracked before any new span arrives."""
    first = daemon_process("--no-llm")
    first.wait_ready()
    simulate(first, "healthy", 300)
    keys_before = _metric(first, "spanwatch_detector_keys")
    assert keys_before > 10
    assert first.terminate() == 0
    second = daemon_process("--no-llm")
    second.wait_ready()
    assert _metric(second, "spanwatch_detector_keys") == keys_before
    assert "detector restored" in second.log()


def test_after_kill_9_the_periodic_snapshot_is_restored(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """No graceful stop: the last periodic snapshot brings the baselines back."""
    import signal
    import time

    env = {"SPANWATCH_DETECTOR__SNAPSHOT_INTERVAL": "500ms"}
    first = daemon_process("--no-llm", env=env)
    first.wait_ready()
    simulate(first, "healthy", 300)
    keys = _metric(first, "spanwatch_detector_keys")
    snapshot = first.data_dir / "detector.pickle"
    deadline = time.monotonic() + 10
    while not snapshot.exists() or snapshot.stat().st_mtime < time.time() - 0.4:
        assert time.monotonic() < deadline, "no periodic snapshot"
        time.sleep(0.1)
    time.sleep(1.2)  # one more periodic save, after the last batch
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    second = daemon_process("--no-llm", env=env)
    second.wait_ready()
    assert _metric(second, "spanwatch_detector_keys") == keys > 10
    assert "detector restored" in second.log()
