"""sd_notify over a real AF_UNIX datagram socket, and the daemon's lifecycle under it."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from spanwatch.daemon import _systemd
from tests.conftest import DaemonProcess
from tests.otlp_client import grpc_export
from tests.otlp_payloads import many_spans


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    yield sock, path
    sock.close()


def _receive_until(sock: socket.socket, wanted: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        message = sock.recv(4096).decode()
        seen.append(message)
        if wanted in message.splitlines():
            return
    raise AssertionError(f"{wanted} not received; got {seen}")


def test_notify_sends_one_datagram(notify_socket: tuple[socket.socket, str]) -> None:
    """notify() writes the message to $NOTIFY_SOCKET as one datagram."""
    sock, path = notify_socket
    assert _systemd.notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=ok"


def test_notify_does_nothing_outside_systemd() -> None:
    """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
    assert _systemd.notify("READY=1", {}) is False


def test_notify_abstract_socket() -> None:
    """An @-prefixed NOTIFY_SOCKET names the abstract namespace."""
    name = f"spanwatch-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert _systemd.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """Pings come twice per WatchdogSec, and only for the process systemd watches."""
    assert _systemd.watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert _systemd.watchdog_interval({}) is None
    assert _systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert _systemd.watchdog_interval({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}) is None


def test_daemon_lifecycle_under_systemd(
    daemon_process: Callable[..., DaemonProcess], notify_socket: tuple[socket.socket, str]
) -> None:
    """READY=1 once ports are bound, WATCHDOG=1 from the loop, STOPPING=1 and exit 0 on SIGTERM."""
    sock, path = notify_socket
    proc = daemon_process("--no-llm", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    seen: list[str] = []
    _receive_until(sock, "READY=1", seen)
    # READY means bound: both ports answer right away, with no retry loop.
    body = many_spans(100).SerializeToString()
    assert grpc_export(f"127.0.0.1:{proc.grpc_port}", body).code == grpc.StatusCode.OK
    _receive_until(sock, "WATCHDOG=1", seen)
    _receive_until(sock, "WATCHDOG=1", seen)
    assert proc.terminate() == 0
    _receive_until(sock, "STOPPING=1", seen)


def test_sigterm_drains_accepted_spans(daemon_process: Callable[..., DaemonProcess]) -> None:
    """Spans accepted before SIGTERM are all processed before the daemon exits 0."""
    proc = daemon_process("--no-llm")
    proc.wait_ready()
    body = many_spans(5000).SerializeToString()
    target = f"127.0.0.1:{proc.grpc_port}"
    accepted = sum(5000 for _ in range(4) if grpc_export(target, body).code == grpc.StatusCode.OK)
    assert accepted == 20000
    assert proc.terminate() == 0
    events = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped and stopped[0]["processed_spans"] == accepted


def test_port_in_use_fails_with_exit_1(daemon_process: Callable[..., DaemonProcess]) -> None:
    """A port already taken stops the daemon with exit 1 and says which address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = daemon_process("--http-listen", f"127.0.0.1:{port}")
        assert proc.proc.wait(20) == 1
        assert "cannot start" in proc.log()


def test_sighup_rotates_the_token_from_its_file(
    daemon_process: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """After SIGHUP the new token in auth.token_file is required and the old one refused."""
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    proc = daemon_process(env={"SPANWATCH_AUTH__TOKEN_FILE": str(token_file)})
    proc.wait_ready()
    target = f"127.0.0.1:{proc.grpc_port}"
    body = many_spans(1).SerializeToString()
    assert grpc_export(target, body, token="old-token").code == grpc.StatusCode.OK
    token_file.write_text("new-token\n")
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while grpc_export(target, body, token="new-token").code != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)
    assert grpc_export(target, body, token="old-token").code == grpc.StatusCode.UNAUTHENTICATED
    assert "old-token" not in proc.log() and "new-token" not in proc.log()
    assert proc.terminate() == 0


def test_a_wedged_event_loop_stops_the_watchdog_pings(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pings come from the event loop: while it is blocked none are sent, so systemd restarts."""
    import asyncio

    from spanwatch import daemon as daemon_module

    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    sock.setblocking(False)

    def drain() -> int:
        count = 0
        while True:
            try:
                count += sock.recv(64) == b"WATCHDOG=1"
            except BlockingIOError:
                return count

    async def scenario() -> tuple[int, int, int]:
        task = asyncio.create_task(daemon_module._watchdog())
        await asyncio.sleep(0.5)
        healthy = drain()
        time.sleep(0.6)  # noqa: ASYNC251 - wedging the loop is the point
        wedged = drain()
        await asyncio.sleep(0.5)
        recovered = drain()
        task.cancel()
        return healthy, wedged, recovered

    healthy, wedged, recovered = asyncio.run(scenario())
    assert healthy >= 5 and recovered >= 5
    assert wedged <= 1  # at most the ping already due when the loop stalled


def test_sigterm_under_load_processes_every_accepted_span(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """Clients keep sending while SIGTERM arrives: every accepted span is processed, exit 0."""
    import threading

    proc = daemon_process("--no-llm")
    proc.wait_ready()
    target = f"127.0.0.1:{proc.grpc_port}"
    body = many_spans(2000).SerializeToString()
    acked = [0, 0, 0]
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            answer = grpc_export(target, body)
            if answer.code == grpc.StatusCode.OK:
                acked[n] += 2000
            elif answer.code != grpc.StatusCode.UNAVAILABLE:
                return  # the port has closed

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    assert proc.terminate() == 0
    stop.set()
    for thread in threads:
        thread.join(30)
    events = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    (stopped,) = [e for e in events if e["event"] == "stopped"]
    assert sum(acked) > 0
    assert stopped["processed_spans"] == stopped["accepted_spans"] >= sum(acked)
