"""Every message the daemon sends parses strictly against proto/spanwatch/v1/events.proto."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format
from websockets.asyncio.client import connect

from spanwatch.model import Event, EventType
from tests.conftest import RunningDaemon
from tests.events import analysis_events, incident

PROTO_ROOT = Path(__file__).parent.parent / "proto"


@pytest.fixture(scope="module")
def events_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("proto")
    include = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            str(PROTO_ROOT / "spanwatch" / "v1" / "events.proto"),
        ]
    )
    assert status == 0
    path = out / "spanwatch" / "v1" / "events_pb2.py"
    spec = importlib.util.spec_from_file_location("spanwatch_schema_events_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_published_message_matches_the_schema(
    daemon: RunningDaemon, events_pb2: ModuleType
) -> None:
    """Incident, analysis, rating, reply and replay-gap messages are all valid Event JSON."""
    hub = daemon.daemon.hub
    inc = incident(1, severity=1)
    resolved = dataclasses.replace(inc, resolved_at_ns=inc.detected_at_ns + 60_000_000_000)
    events = [
        Event.incident(EventType.INCIDENT_OPENED, inc),
        Event.incident(EventType.INCIDENT_UPDATED, inc),
        *analysis_events("a1", ["inc-1"], ["Root ", "cause."]),
        Event(
            EventType.ANALYSIS_FAILED,
            {"analysis_id": "a2", "incident_ids": ["inc-1"], "reason": "ollama unreachable"},
        ),
        Event.incident(EventType.INCIDENT_RESOLVED, resolved),
        Event("analysis.retry", {"analysis_id": "a3", "attempt": 2}),
        Event(
            EventType.ANALYSIS_COMPLETED,
            {
                "analysis_id": "a3",
                "incident_ids": ["inc-1"],
                "text": "t",
                "model": "m",
                "fallback": False,
                "prompt": {"system": "s", "user": "u"},
                "counters": {
                    "eval_count": 3,
                    "prompt_eval_count": 9,
                    "total_duration_ms": 1.5,
                    "load_duration_ms": 0.1,
                    "prompt_eval_duration_ms": 0.2,
                    "eval_duration_ms": 1.0,
                    "done_reason": "stop",
                },
            },
        ),
    ]

    async def collect() -> list[dict[str, Any]]:
        port = daemon.daemon.ws.port
        async with connect(f"ws://127.0.0.1:{port}/events") as ws:
            await asyncio.sleep(0.1)
            for event in events:
                hub.publish(event)
            got = [json.loads(await ws.recv()) for _ in events]
            for request in (
                {
                    "type": "rate",
                    "request_id": "r1",
                    "analysis_id": "a1",
                    "rating": "bad",
                    "correction": "It was the database.",
                },
                {"type": "rate", "request_id": "r2", "analysis_id": "zz", "rating": "good"},
                {"type": "ping", "request_id": "p"},
            ):
                await ws.send(json.dumps(request))
            got += [json.loads(await ws.recv()) for _ in range(4)]
        return got

    messages = asyncio.run(collect())
    types = {m["type"] for m in messages}
    assert types >= {
        "incident.opened",
        "incident.updated",
        "incident.resolved",
        "analysis.started",
        "analysis.token",
        "analysis.completed",
        "analysis.failed",
        "analysis.retry",
        "rating.recorded",
        "rate.ok",
        "rate.error",
        "pong",
    }
    for message in messages:
        parsed = json_format.ParseDict(message, events_pb2.Event(), ignore_unknown_fields=False)
        assert parsed.type == message["type"]
        if "incident" in message:
            assert parsed.incident.started_at.ToNanoseconds() == inc.started_at_ns


def test_replay_gap_matches_the_schema(make_daemon: Any, events_pb2: ModuleType) -> None:
    """The replay.gap notice is a valid Event too."""
    d = make_daemon(**{"publish.replay_ring": 100})
    for n in range(150):
        d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(n)))

    async def first() -> dict[str, Any]:
        await asyncio.sleep(0.2)
        async with connect(
            f"ws://127.0.0.1:{d.daemon.ws.port}/events?since=3", max_queue=None
        ) as ws:
            return dict(json.loads(await ws.recv()))

    gap = asyncio.run(first())
    assert gap["type"] == "replay.gap"
    json_format.ParseDict(gap, events_pb2.Event(), ignore_unknown_fields=False)
