"""``spanwatch demo`` (``make demo``): a daemon fed with simulated faults, kept up until Ctrl-C.

It fails fast with the daemon's own one-line reason when the daemon cannot start, stops
everything it started on Ctrl-C (SIGINT), SIGTERM or SIGHUP, and can be run again and again
on the same data directory: the detector's snapshot is left out at each start because the
previous run's simulated clock ran ahead of the wall clock, while the incidents, analyses and
ratings stay for the page's history.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from spanwatch.config import ConfigError, ListenAddress

from ._training import CliError

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class _Stop(Exception):
    pass


def demo(
    grpc_listen: str,
    http_listen: str,
    ws_listen: str,
    data_dir: Path,
    speed: float,
    scenario: str,
    duration: float | None,
    llm: bool,
    config: Path | None,
) -> int:
    try:
        grpc = ListenAddress.parse(grpc_listen)
        http = ListenAddress.parse(http_listen)
        ws = ListenAddress.parse(ws_listen)
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "detector.pickle").unlink(missing_ok=True)
    log_path = data_dir / "spanwatchd.log"
    command = [
        sys.executable,
        "-m",
        "spanwatch.daemon",
        "--grpc-listen",
        str(grpc),
        "--http-listen",
        str(http),
        "--ws-listen",
        str(ws),
        "--data-dir",
        str(data_dir),
        *([] if llm else ["--no-llm"]),
        *(["--config", str(config)] if config else []),
    ]
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Ctrl-C reaches the whole foreground group (make, this process), so a second signal
        # can arrive while the first is being handled: only the first one stops the demo.
        stopping.append(signum)
        if len(stopping) == 1:
            raise _Stop

    previous = {
        s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    daemon: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("ab") as log:
            # Own process groups: a Ctrl-C reaches this process, which stops them in order.
            daemon = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_ready(daemon, http, log_path)
        host = _client_host(ws.host)
        api = f"http://{_client_host(http.host)}:{http.port}"
        print(
            f"\n  live page: http://{host}:{ws.port}/   (first incident in about "
            f"{max(5, int(600 / speed) + 10) if speed else 10} seconds)\n"
            f"  daemon log: {log_path}\n"
            f"  try: spanwatch{_api_flag(api)} incidents   "
            f"spanwatch tail{_ws_flag(host, ws.port)}\n"
            "  Ctrl-C stops the demo and the daemon.\n",
            flush=True,
        )
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spanwatch.cli",
                "simulate",
                "--target",
                f"{_client_host(grpc.host)}:{grpc.port}",
                "--speed",
                str(speed),
                "--scenario",
                scenario,
                *(["--duration", str(duration)] if duration is not None else []),
            ],
            start_new_session=True,
        )
        while sim.poll() is None:
            _check_alive(daemon, log_path)
            time.sleep(0.2)
        if sim.returncode != 0:
            raise CliError(f"the simulation stopped with exit code {sim.returncode}")
        print(
            "\n  simulation finished; the daemon keeps running (page, API, CLI). "
            "Ctrl-C stops it.\n",
            flush=True,
        )
        while True:
            _check_alive(daemon, log_path)
            time.sleep(0.5)
    except _Stop:
        print("\n  stopping…", file=sys.stderr, flush=True)
        return 0
    finally:
        # No second Ctrl-C may leave a child behind: ignore further signals while stopping.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        for proc in (sim, daemon):
            _stop(proc)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_ready(daemon: subprocess.Popen[bytes], http: ListenAddress, log_path: Path) -> None:
    url = f"http://{_client_host(http.host)}:{http.port}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        _check_alive(daemon, log_path)
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise CliError(f"spanwatchd was not ready within {READY_TIMEOUT_S:.0f} s; see {log_path}")


def _check_alive(daemon: subprocess.Popen[bytes], log_path: Path) -> None:
    if daemon.poll() is None:
        return
    reason = _reason(log_path) or f"it exited with code {daemon.returncode}; see {log_path}"
    raise CliError(f"the daemon cannot run: {reason}")


def _reason(log_path: Path) -> str:
    """The daemon's one line (``spanwatchd: ...``) from the end of its log."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-50:]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("spanwatchd: "):
            return line.removeprefix("spanwatchd: ")
    return ""


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _api_flag(api: str) -> str:
    return "" if api == "http://127.0.0.1:4318" else f" --api {api}"


def _ws_flag(host: str, port: int) -> str:
    url = f"ws://{host}:{port}/events"
    return "" if url == "ws://127.0.0.1:8765/events" else f" --ws {url}"
