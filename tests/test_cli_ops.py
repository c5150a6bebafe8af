"""spanwatch tail: bounded retries with a reason, or --follow to keep trying."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import RunningDaemon, free_port
from tests.events import opened


def _tail(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spanwatch.cli", "tail", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_tail_gives_up_with_the_reason_when_nothing_listens() -> None:
    """Nothing on the port: five attempts with backoff, each saying why, then exit 1."""
    url = f"ws://127.0.0.1:{free_port()}/events"
    began = time.monotonic()
    done = _tail("--ws", url)
    took = time.monotonic() - began
    assert done.returncode == 1
    assert took < 20
    assert done.stderr.count("connection refused") == 5
    assert "attempt 5 of 5" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"spanwatch: cannot connect to {url}: connection refused")
    assert "--follow" in last


def test_tail_follow_keeps_trying() -> None:
    """With --follow it keeps trying past five failures, until stopped."""
    url = f"ws://127.0.0.1:{free_port()}/events"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanwatch.cli", "tail", "--follow", "--ws", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(10)  # five failures take about 0.5 + 1 + 2 + 4 = 7.5 s
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(10)
    assert err.count("connection refused") >= 5


def test_tail_refused_subscription_says_so(make_daemon: object) -> None:
    """A daemon that wants a token: one clear line and exit 1, no retries."""
    daemon: RunningDaemon = make_daemon(**{"auth.token": "abc"})  # type: ignore[operator]
    done = _tail("--ws", f"ws://127.0.0.1:{daemon.daemon.ws.port}/events")
    assert done.returncode == 1
    assert "HTTP 401" in done.stderr and "--token" in done.stderr


def test_tail_prints_incidents(daemon: RunningDaemon) -> None:
    """Connected, it prints what is published, one line per incident."""
    import threading

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spanwatch.cli",
            "tail",
            "--ws",
            f"ws://127.0.0.1:{daemon.daemon.ws.port}/events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any("error_burst" in line for line in lines) and time.monotonic() < deadline:
            daemon.daemon.hub.publish(opened(len(lines) + 1, severity=1))
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(10)
    assert any("SEV1" in line and "error_burst" in line for line in lines), lines
