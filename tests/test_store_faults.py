"""A full, read-only or locked database: clear retryable errors, counted drops, ingest goes on."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import connect

from spanwatch.model import Event, EventType
from tests.conftest import RunningDaemon
from tests.events import analysis_events, incident
from tests.otlp_client import grpc_export, http_request
from tests.otlp_payloads import many_spans


@pytest.fixture
def rated_daemon(make_daemon: Callable[..., RunningDaemon]) -> Iterator[RunningDaemon]:
    """A daemon whose store holds one finished analysis, "a1", ready to be rated."""
    d = make_daemon(**{"storage.busy_timeout": "200ms"})
    for event in analysis_events("a1", ["inc-1"], ["text"]):
        d.daemon.hub.publish(event)
    deadline = time.monotonic() + 10
    while not d.daemon.store.analyses():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield d


def _rate(d: RunningDaemon, correction: str = "") -> tuple[int, dict[str, Any]]:
    body = {
        "analysis_id": "a1",
        "rating": "bad" if correction else "good",
        "correction": correction,
    }
    answer = http_request(
        f"{d.http_url}/api/training/rate", json.dumps(body).encode(), "application/json"
    )
    return answer.status, json.loads(answer.body)


def _pragma(d: RunningDaemon, statement: str) -> None:
    store = d.daemon.store
    with store._lock:
        store._db.execute(statement)


def _still_ingesting(d: RunningDaemon) -> None:
    assert grpc_export(d.grpc_target, many_spans(10).SerializeToString()).code == (
        grpc.StatusCode.OK
    )


def test_a_full_disk(rated_daemon: RunningDaemon) -> None:
    """No room: a rating gets 503 saying so; incident records are counted as dropped."""
    d = rated_daemon
    pages = d.daemon.store._db.execute("PRAGMA page_count").fetchone()[0]
    _pragma(d, f"PRAGMA max_page_count = {pages}")
    status, body = _rate(d, correction="x" * 15_000)  # needs pages the file may not grow
    assert status == 503 and "full" in body["error"]
    for n in range(50):
        big = dataclasses.replace(incident(100 + n), summary="y" * 5000)  # needs new pages
        d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, big))
    deadline = time.monotonic() + 10  # publishing hands the records over asynchronously
    while d.metric("spanwatch_store_dropped_events") == 0:
        assert time.monotonic() < deadline, "no incident record was refused"
        time.sleep(0.02)
    _still_ingesting(d)
    _pragma(d, "PRAGMA max_page_count = 1073741823")  # room again: ratings work
    assert _rate(d)[0] == 200


def test_a_read_only_database(rated_daemon: RunningDaemon) -> None:
    """Read-only: REST says 503, the page's WebSocket gets rate.error 503, nothing crashes."""
    d = rated_daemon
    _pragma(d, "PRAGMA query_only = ON")
    status, body = _rate(d)
    assert status == 503 and "readonly" in body["error"].replace("-", "")

    async def over_websocket() -> dict[str, Any]:
        async with connect(f"ws://127.0.0.1:{d.daemon.ws.port}/events") as ws:
            await ws.send(json.dumps({"type": "rate", "analysis_id": "a1", "rating": "good"}))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if reply["type"].startswith("rate."):
                    return dict(reply)

    reply = asyncio.run(over_websocket())
    assert (reply["type"], reply["status"]) == ("rate.error", 503)
    assert http_request(f"{d.http_url}/api/training/stats", method="GET").status == 200
    _still_ingesting(d)


def test_a_database_locked_by_another_process(rated_daemon: RunningDaemon) -> None:
    """A lock held elsewhere: 503 after storage.busy_timeout; once released, ratings work."""
    d = rated_daemon
    other = sqlite3.connect(d.daemon.store.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        status, body = _rate(d)
        assert status == 503 and "locked" in body["error"]
        assert time.monotonic() - started < 5
        _still_ingesting(d)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _rate(d)[0] == 200
    assert d.daemon.store.stats()["ratings"] == 1
