"""External programs the tests drive (Alertmanager, Chromium): found, or skipped, or required.

With ``SPANWATCH_REQUIRE_TOOLS=1`` (CI sets it) a missing program fails the test instead of
skipping it, so CI never passes by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

CHROMIUM = os.environ.get("SPANWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
ALERTMANAGER = os.environ.get(
    "SPANWATCH_TEST_ALERTMANAGER",
    shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "",
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def require(path: str, what: str) -> str:
    """``path`` when it exists; else skip, or fail where the tools are required."""
    if path and Path(path).exists():
        return path
    message = f"{what} not found ({path or 'not on PATH'})"
    if os.environ.get("SPANWATCH_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message}, and SPANWATCH_REQUIRE_TOOLS=1", pytrace=False)
    pytest.skip(message)


class Recorder:
    """An HTTP server on a free loopback port that records the JSON bodies posted to it."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = status
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with recorder._lock:
                    recorder.requests.append((dict(self.headers.items()), body))
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def bodies(self) -> list[Any]:
        with self._lock:
            return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Alertmanager:
    """A real Alertmanager on a free loopback port, its notifications going to a Recorder."""

    def __init__(self, binary: str, tmp: Path, receiver: Recorder) -> None:
        self.port = free_port()
        config = tmp / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: hook\n"
            "  group_by: [alertname, service]\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: {receiver.url}\n"
            "        send_resolved: true\n"
        )
        self.log_path = tmp / "alertmanager.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("alertmanager not ready in 30 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@contextmanager
def alertmanager(tmp: Path) -> Iterator[tuple[Alertmanager, Recorder]]:
    binary = require(ALERTMANAGER, "prometheus-alertmanager")
    receiver = Recorder()
    am = Alertmanager(binary, tmp, receiver)
    try:
        yield am, receiver
    finally:
        am.stop()
        receiver.close()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def browser_page() -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium; fails the test on any page error."""
    from playwright.sync_api import sync_playwright

    executable = require(CHROMIUM, "chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: errors.append(f"unexpected alert: {dialog.message}"))
            yield page
            assert errors == []
        finally:
            browser.close()
