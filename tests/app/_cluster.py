"""The app running: its three services as processes on free loopback ports, in the order
each needs the next (inventory, orders, frontend), stopped together."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
SEMCONV_MODES = ("old", "new")
# what OTEL_SEMCONV_STABILITY_OPT_IN holds in each mode: 0.66b1 knows http and database (and
# their /dup forms, which send both); unset, every instrumentation keeps the old conventions
SEMCONV_OPT_IN = {"old": None, "new": "http,database"}
# the service whose code each fault acts in
FAULT_SERVICE = {"keyerror": "inventory", "slow_sql": "inventory", "slow_http": "orders"}


def semconv_env(mode: str) -> dict[str, str]:
    """This process's environment for a service in semconv ``mode`` (old or new)."""
    env = {k: v for k, v in os.environ.items() if k != "OTEL_SEMCONV_STABILITY_OPT_IN"}
    opt_in = SEMCONV_OPT_IN[mode]
    if opt_in is not None:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = opt_in
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Cluster:
    """``frontend`` → ``orders`` → ``inventory``, each exporting by ``export(name)``: an
    exporter spec of :mod:`tests.app.service` (``otlp:HOST:PORT`` or ``file:PATH``).

    Use it as a context manager; the databases and logs live in ``workdir`` (a temporary
    directory unless given). ``env`` adds to the services' environment (``OTEL_BSP_*``)."""

    def __init__(
        self,
        export: str | dict[str, str],
        semconv: str = "old",
        workdir: Path | None = None,
        seed: int = 0,
        start_timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> None:
        if semconv not in SEMCONV_MODES:
            raise ValueError(f"semconv is old or new, not {semconv!r}")
        self.semconv = semconv
        self._export = export
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="spanwatch-app-")
            workdir = Path(self._own_dir.name)
        self.workdir = workdir
        self._seed = seed
        self._timeout = start_timeout
        self._env = env or {}
        self.urls: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._logs: list[IO[str]] = []

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def export_of(self, name: str) -> str:
        return self._export if isinstance(self._export, str) else self._export[name]

    def start(self) -> None:
        env = {**semconv_env(self.semconv), **self._env}
        for name, downstream in (
            ("inventory", ""),
            ("orders", "inventory"),
            ("frontend", "orders"),
        ):
            args = [sys.executable, "-m", "tests.app.service", name]
            args += ["--export", self.export_of(name), "--seed", str(self._seed)]
            if name != "frontend":
                args += ["--db", str(self.workdir / f"{name}.db")]
            if downstream:
                args += ["--downstream", self.urls[downstream]]
            log = (self.workdir / f"{name}.log").open("w")
            self._logs.append(log)
            proc = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
            self._procs[name] = proc
            self.urls[name] = f"http://127.0.0.1:{self._wait_ready(name, proc)}"

    def _wait_ready(self, name: str, proc: subprocess.Popen[str]) -> int:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], self._timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            raise RuntimeError(f"{name} did not start: {self.log(name)[-2000:]}")
        return int(line.split()[1])

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def set_fault(self, kind: str, **params: Any) -> None:
        """Switch fault ``kind`` (off, keyerror, slow_sql, slow_http) on in every service;
        ``share`` and ``ms`` as in :class:`tests.app._services.Fault`."""
        body = json.dumps({"kind": kind, **params}).encode()
        for url in self.urls.values():
            req = urllib.request.Request(
                f"{url}/_fault", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to every service, frontend first: each flushes its spans and exits."""
        for name in ("frontend", "orders", "inventory"):
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None
