"""Secrets in span text never reach the prompt, the stream, the store, exports, events or logs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from websockets.asyncio.client import connect

from spanwatch.analyze.testing import OllamaServer
from spanwatch.model import SpanBatch, SpanKind, StatusCode
from spanwatch.otlp import encode_batch
from spanwatch.sim import Simulator
from tests.conftest import RunningDaemon
from tests.otlp_client import grpc_export, http_request
from tests.otlp_logs import LogsCollector

SECRETS = [
    "hunter2",
    "abc123secret",
    "jane.doe@example.com",
    "sk-live-0123456789abcdefghij",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9Pl",
]
MESSAGE = (
    "charge failed for jane.doe@example.com via postgres://app:hunter2@db/orders "
    "token=abc123secret key sk-live-0123456789abcdefghij Authorization: Bearer "
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9Pl"
)


@pytest.fixture
def ollama() -> Iterator[OllamaServer]:
    server = OllamaServer([("ok", ["The ", "charges ", "fail."])])
    yield server
    server.close()


def _poisoned(batch: SpanBatch) -> SpanBatch:
    """Payments fails, with secrets in its status messages and in its route."""
    rows = []
    for row in batch.rows():
        if row.service == "payments" and row.kind == SpanKind.SERVER:
            row = dataclasses.replace(
                row,
                status_code=StatusCode.ERROR,
                status_message=MESSAGE,
                exception_type="",
                exception_message=MESSAGE,
                http_route="/v1/charges?token=abc123secret",
            )
        rows.append(row)
    return SpanBatch.from_spans(rows)


def test_a_corpus_of_secrets_goes_nowhere(
    make_daemon: Callable[..., RunningDaemon],
    ollama: OllamaServer,
    collector: tuple[LogsCollector, int],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Prompt, WebSocket, SQLite, every export, OTel events and logs are all free of them."""
    logs, port = collector
    d = make_daemon(
        **{
            "llm.host": ollama.host,
            "analysis.batch_window": "200ms",
            "analysis.max_batch": 8,
            "events.enabled": "true",
            "events.endpoint": f"http://127.0.0.1:{port}",
        }
    )
    for tick, batch in enumerate(Simulator(seed=2).batches(800)):
        if tick >= 650:
            batch = _poisoned(batch)
        answer = grpc_export(d.grpc_target, encode_batch(batch).SerializeToString())
        assert answer.code == grpc.StatusCode.OK

    async def stream() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with connect(f"ws://127.0.0.1:{d.daemon.ws.port}/events?since=0") as ws:
            deadline = time.monotonic() + 30
            while not any(m["type"] == "analysis.completed" for m in got):
                got.append(
                    json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                )
        return got

    messages = asyncio.run(stream())
    incidents = [m for m in messages if m["type"].startswith("incident.")]
    assert incidents, [m["type"] for m in messages]
    completed = next(m for m in messages if m["type"] == "analysis.completed")
    assert "[REDACTED" in json.dumps(incidents) + completed["prompt"]["user"]

    d.call(
        d.daemon.ratings.rate(
            {
                "analysis_id": completed["analysis_id"],
                "rating": "bad",
                "correction": "It was the card token=abc123secret of jane.doe@example.com",
            }
        )
    )
    exports = "".join(
        http_request(f"{d.http_url}/api/training/export?format={fmt}", method="GET").body.decode()
        for fmt in ("seed", "chat", "alpaca", "dpo")
    )
    assert d.daemon.events is not None
    d.daemon.events.flush()
    d.stop()  # closes the database, flushing its WAL into the file
    data_dir = d.daemon.config.storage.data_dir
    stored = b"".join(
        p.read_bytes() for p in data_dir.iterdir() if p.name.startswith("spanwatch.db")
    )
    events = json.dumps(logs.records)
    printed = capfd.readouterr()
    places = {
        "prompt": json.dumps(ollama.requests),
        "websocket": json.dumps(messages),
        "store": stored.decode("utf-8", errors="replace"),
        "exports": exports,
        "otel events": events,
        "logs": printed.out + printed.err,
    }
    assert len(logs.records) > 0 and exports.strip()
    for place, text in places.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} reached the {place}"
