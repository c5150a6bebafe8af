"""Analysis inside a running daemon: incidents in, streamed write-ups out on the WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import connect

from spanwatch.analyze.testing import OllamaServer
from spanwatch.model import Event, EventType
from tests.conftest import RunningDaemon
from tests.events import incident
from tests.otlp_client import grpc_export
from tests.otlp_payloads import many_spans

TOKENS = ["Checkout ", "fails ", "because ", "payments ", "times ", "out."]


@pytest.fixture
def ollama() -> Iterator[OllamaServer]:
    server = OllamaServer([("ok", TOKENS)])
    yield server
    server.close()


def _collect(d: RunningDaemon, until: str, within: float = 20) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with connect(f"ws://127.0.0.1:{d.daemon.ws.port}/events?since=0") as ws:
            deadline = time.monotonic() + within
            while not got or got[-1]["type"] != until:
                remaining = deadline - time.monotonic()
                got.append(json.loads(await asyncio.wait_for(ws.recv(), remaining)))
        return got

    return asyncio.run(read())


def test_a_severe_incident_is_written_up_token_by_token(
    make_daemon: Callable[..., RunningDaemon], ollama: OllamaServer
) -> None:
    """SEV1–3 incidents reach the model; subscribers see every token, then the whole text."""
    d = make_daemon(**{"llm.host": ollama.host, "analysis.batch_window": "200ms"})
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1, severity=2)))
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(2, severity=5)))
    messages = _collect(d, "analysis.completed")
    kinds = [m["type"] for m in messages]
    assert kinds[:2] == ["incident.opened", "incident.opened"]
    assert kinds[2:] == ["analysis.started"] + ["analysis.token"] * 6 + ["analysis.completed"]
    assert messages[2]["incident_ids"] == ["inc-1"]  # the SEV5 one is not sent
    assert [m["text"] for m in messages[3:-1]] == TOKENS
    assert messages[-1]["text"] == "".join(TOKENS)
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    # the finished analysis can be rated, durably
    rated = d.call(
        d.daemon.ratings.rate({"analysis_id": messages[-1]["analysis_id"], "rating": "good"})
    )
    assert rated["rating"] == "good"
    assert d.daemon.store.stats()["good"] == 1


def test_ingest_never_waits_on_a_hanging_model(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """While the model hangs, spans keep being accepted at once."""
    server = OllamaServer([("hang",)])
    try:
        d = make_daemon(
            **{
                "llm.host": server.host,
                "analysis.batch_window": "100ms",
                "llm.first_token_timeout": "30s",
            }
        )
        d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1)))
        deadline = time.monotonic() + 10
        while not server.requests:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        body = many_spans(2000).SerializeToString()
        for _ in range(5):
            started = time.monotonic()
            assert grpc_export(d.grpc_target, body).code == grpc.StatusCode.OK
            assert time.monotonic() - started < 2
        d.wait_for_spans(10_000)
    finally:
        server.close()


def test_tail_shows_incidents_and_streams_analyses(
    make_daemon: Callable[..., RunningDaemon], ollama: OllamaServer
) -> None:
    """`spanwatch tail` prints the incident, then the analysis as it is written."""
    import subprocess
    import sys

    d = make_daemon(**{"llm.host": ollama.host, "analysis.batch_window": "200ms"})
    assert d.daemon.hub.subscriber_count == 0
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spanwatch.cli",
            "tail",
            "--once",
            "--ws",
            f"ws://127.0.0.1:{d.daemon.ws.port}/events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Published only once tail is subscribed: tail subscribes live (no ?since=), so what comes
    # before is not meant for it. However long it takes to start, the hub tells when it has.
    deadline = time.monotonic() + 60
    while d.daemon.hub.subscriber_count == 0:
        if tail.poll() is not None:
            _, err = tail.communicate()
            raise AssertionError(f"tail exited with {tail.returncode} before subscribing: {err}")
        if time.monotonic() > deadline:
            tail.kill()
            _, err = tail.communicate()
            raise AssertionError(f"tail did not subscribe within 60 s: {err}")
        time.sleep(0.02)
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1, severity=1)))
    out, err = tail.communicate(timeout=30)
    assert tail.returncode == 0, err
    assert " SEV1  opened   error_burst       payments POST /charge" in out
    assert f"{''.join(TOKENS)}\n──" in out
