"""``make demo``: fails fast, stays up after the simulation, stops on Ctrl-C, works twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


class Demo:
    """``make demo DEMO_ARGS=...`` in its own session, as a terminal would run it."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPANWATCH_")}
        self.proc = subprocess.Popen(
            # -o: never rebuild the virtual environment from inside a test
            ["make", "-s", "-o", ".venv/.installed", "demo", f"DEMO_ARGS={' '.join(args)}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in the demo's output:\n{self.output()}")

    def signal(self, signum: int) -> int:
        os.killpg(self.proc.pid, signum)  # what Ctrl-C does: the whole foreground group
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def _args(grpc: int, http: int, ws: int, data: Path, *more: str) -> list[str]:
    return [
        f"--grpc-listen 127.0.0.1:{grpc}",
        f"--http-listen 127.0.0.1:{http}",
        f"--ws-listen 127.0.0.1:{ws}",
        f"--data-dir {data}",
        *more,
    ]


def _free(port: int) -> bool:
    """Nothing listens on the port any more (connections still in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def _incidents(http: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/incidents?limit=500") as resp:
        return list(json.loads(resp.read())["incidents"])


def test_demo_fails_fast_with_the_daemons_reason(tmp_path: Path) -> None:
    """A taken port: the demo stops within seconds, with the one line naming the flag."""
    grpc, http, ws = _ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", http))
        busy.listen()
        started = time.monotonic()
        demo = Demo(*_args(grpc, http, ws, tmp_path / "data"))
        try:
            code = demo.proc.wait(30)
            demo._reader.join(5)
        finally:
            demo.close()
    assert code != 0
    assert time.monotonic() - started < 20
    assert f"cannot listen for OTLP/HTTP on 127.0.0.1:{http}" in demo.output()
    assert "--http-listen" in demo.output()
    assert "Traceback" not in demo.output()


@pytest.mark.timeout(420)  # two demo runs, on a machine that may be busy
def test_demo_stays_up_stops_on_ctrl_c_and_runs_again(tmp_path: Path) -> None:
    """After its simulation the daemon keeps serving the API; Ctrl-C (SIGINT to the group)
    stops everything and frees the ports; a second run on the same data finds incidents again."""
    grpc, http, ws = _ports()
    data = tmp_path / "data"
    args = _args(grpc, http, ws, data, "--speed 0", "--duration 1000", "--scenario error_burst")
    counts = []
    first_run = 0.0
    for signum in (signal.SIGINT, signal.SIGTERM):
        # The simulation's event time starts from the wall clock, and an incident's id is its
        # pattern, root and first window: a second run less than a window after the first
        # would find the same incidents again under the same ids. Two windows and more apart.
        if first_run:
            time.sleep(max(0.0, first_run + 25 - time.time()))
        first_run = first_run or time.time()
        demo = Demo(*args)
        try:
            demo.wait_for_line(f"live page: http://127.0.0.1:{ws}/", 60)
            demo.wait_for_line("simulation finished; the daemon keeps running", 180)
            time.sleep(1)
            assert demo.proc.poll() is None
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz") as resp:
                assert resp.status == 200
            listed = subprocess.run(
                [sys.executable, "-m", "spanwatch.cli", "--api", f"http://127.0.0.1:{http}"]
                + ["incidents"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert listed.returncode == 0, listed.stderr
            assert "error_burst" in listed.stdout, listed.stdout
            counts.append(len(_incidents(http)))
            began = time.monotonic()
            code = demo.signal(signum)
            assert time.monotonic() - began < 45
        finally:
            demo.close()
        assert code in (0, 2, -signal.SIGINT, -signal.SIGTERM), demo.output()
        assert all(_free(p) for p in (grpc, http, ws)), "a port is still taken after the stop"
        assert "Traceback" not in demo.output(), demo.output()
    # The second run found incidents of its own, on top of the first run's history.
    assert counts[0] >= 1
    assert counts[1] > counts[0]


@pytest.mark.parametrize(
    ("flag", "what"),
    [("--grpc-listen", "OTLP/gRPC"), ("--http-listen", "OTLP/HTTP"), ("--ws-listen", "WebSocket")],
)
def test_each_busy_port_is_one_line_naming_its_flag(tmp_path: Path, flag: str, what: str) -> None:
    """spanwatchd with a taken port exits 1 with one line that names the flag, no traceback."""
    ports = dict(zip(("--grpc-listen", "--http-listen", "--ws-listen"), _ports(), strict=True))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[flag]))
        busy.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPANWATCH_")}
        done = subprocess.run(
            [sys.executable, "-m", "spanwatch.daemon", "--no-llm", "--data-dir", str(tmp_path)]
            + [arg for f, p in ports.items() for arg in (f, f"127.0.0.1:{p}")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("spanwatchd: ")]
    assert lines == [
        f"spanwatchd: cannot listen for {what} on 127.0.0.1:{ports[flag]} "
        + (
            "(address in use or not available)"
            if what == "OTLP/gRPC"
            else "(address already in use)"
        )
        + f": choose another with {flag}"
    ]
    assert "Traceback" not in done.stderr + done.stdout
