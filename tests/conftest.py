"""Shared fixtures: a real daemon in this process (on its own event-loop thread) or in another."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from spanwatch.config import Config, load
from spanwatch.daemon import Daemon, Stage
from spanwatch.model import Span, SpanBatch
from spanwatch.otlp import resident_bytes


class RunningDaemon:
    """A :class:`Daemon` started on a private event loop in a background thread."""

    def __init__(self, config: Config, stages: list[Stage]) -> None:
        self.captured: list[SpanBatch] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.daemon = Daemon(config, stages=[self._capture, *stages])
        self.call(self.daemon.start())

    def _capture(self, batch: SpanBatch) -> None:
        with self._lock:
            self.captured.append(batch)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.daemon.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    def spans(self) -> list[Span]:
        with self._lock:
            return [span for batch in self.captured for span in batch.rows()]

    def wait_for_spans(self, count: int, timeout: float = 10) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if len(spans) >= count:
                return spans
            time.sleep(0.02)
        raise AssertionError(f"expected {count} spans, got {len(self.spans())}")

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.call(self.daemon.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    """Start daemons on free ports: ``make_daemon(**{"section.key": value}, stages=[...])``."""
    started: list[RunningDaemon] = []

    def start(stages: list[Stage] | None = None, **overrides: Any) -> RunningDaemon:
        settings: dict[str, Any] = {
            "receiver.grpc_listen": "127.0.0.1:0",
            "receiver.http_listen": "127.0.0.1:0",
            "publish.ws_listen": "127.0.0.1:0",
            "storage.data_dir": str(tmp_path / f"data{len(started)}"),
            "receiver.shutdown_grace": "1s",
            # Analysis stays dormant unless a test asks for it: incidents published by other
            # tests must not turn into LLM calls and extra messages.
            "analysis.batch_window": "1h",
            "analysis.max_batch": 1_000_000,
            "llm.host": "http://127.0.0.1:9",
            # The daemon runs inside the test process, whose memory (torch, earlier tests'
            # detectors) is not the daemon's: its limit counts from what the process holds.
            "receiver.memory_limit": resident_bytes() + 1024**3,
        }
        settings.update({k.replace("__", "."): v for k, v in overrides.items()})
        running = RunningDaemon(load(env={}, overrides=settings), stages or [])
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def daemon(make_daemon: Callable[..., RunningDaemon]) -> RunningDaemon:
    return make_daemon()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """``spanwatchd`` in a subprocess, on free ports, stopped by the test."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.http_port, self.ws_port = free_port(), free_port(), free_port()
        self.data_dir = tmp_path / "data"
        command = [
            sys.executable,
            "-m",
            "spanwatch.daemon",
            "--grpc-listen",
            f"127.0.0.1:{self.grpc_port}",
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
            "--ws-listen",
            f"127.0.0.1:{self.ws_port}",
            "--data-dir",
            str(self.data_dir),
            *args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPANWATCH_")}
        full_env.update(env or {})
        self.log_path = tmp_path / "spanwatchd.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=full_env
        )

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"spanwatchd exited {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"spanwatchd not ready in {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    procs: list[DaemonProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        proc = DaemonProcess(tmp_path, *args, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


def simulate(proc: DaemonProcess | str, scenario: str, duration: int, seed: int = 3) -> None:
    """Send ``spanwatch simulate`` traffic to a daemon process or a gRPC target, at full speed."""
    target = proc if isinstance(proc, str) else f"127.0.0.1:{proc.grpc_port}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanwatch.cli",
            "simulate",
            "--target",
            target,
            "--speed",
            "0",
            "--scenario",
            scenario,
            "--duration",
            str(duration),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def collector() -> Iterator[tuple[Any, int]]:
    """An OTLP LogsService on a free port: (its recorder, the port)."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

    from tests.otlp_logs import LogsCollector

    servicer = LogsCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)
