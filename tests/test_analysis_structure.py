"""Structured answers through a running daemon and the Ollama-protocol server: tokens stream
as readable text, and analysis.completed carries the parsed parts and the grounding checks,
which the store keeps and the schema describes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from google.protobuf import json_format
from websockets.asyncio.client import connect

from spanwatch.analyze.testing import OllamaServer
from spanwatch.model import Event, EventType
from tests import test_schema
from tests.conftest import RunningDaemon
from tests.events import incident

ANSWER = [
    "Root cause: payments · POST /charge\n",
    "Evidence: payments fails 42% of its calls against a baseline of 1%; ",
    "checkout POST /checkout fails with it.\n",
    "Hypotheses: none\n",
    "Next steps:\n- read the payments errors since the start\n- check its last deploy\n",
    "Confidence: high\n",
]
schema_pb2 = test_schema.events_pb2  # the compiled schema, as a fixture of this module too

INVENTED = [
    "Root cause: inventory-db · SELECT stock\n",
    "Evidence: 97% of queries time out.\n",
    "Hypotheses: none\nNext steps:\n- restart it\nConfidence: high\n",
]


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


def test_a_structured_answer_streams_and_completes_with_its_parts(
    make_daemon: Callable[..., RunningDaemon], schema_pb2: ModuleType
) -> None:
    """Tokens are the answer's text as written; completed has the parts and passed checks."""
    server = OllamaServer([("ok", ANSWER)])
    try:
        d = make_daemon(**{"llm.host": server.host, "analysis.batch_window": "200ms"})
        d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1, severity=2)))
        messages = _collect(d, "analysis.completed")
    finally:
        server.close()
    tokens = [m["text"] for m in messages if m["type"] == "analysis.token"]
    assert tokens == ANSWER  # readable as it comes: no JSON to reassemble
    done = messages[-1]
    assert done["text"] == "".join(ANSWER)
    (part,) = done["parts"]
    assert part["incident_id"] == "inc-1" and part["valid"] is True
    assert part["root_cause"] == {"service": "payments", "operation": "POST /charge"}
    assert part["confidence"] == "high"
    assert part["next_steps"] == [
        "read the payments errors since the start",
        "check its last deploy",
    ]
    assert done["grounding"]["passed"] is True, done["grounding"]
    assert done["grounding"]["root_cause"] == "agrees"
    json_format.ParseDict(done, schema_pb2.Event(), ignore_unknown_fields=False)
    stored = d.daemon.store.analysis(done["analysis_id"])
    assert stored["grounding"] == done["grounding"] and stored["parts"] == done["parts"]
    user = server.requests[0]["messages"][0]["content"]
    assert "Root cause: <service> · <operation>" in user  # the system prompt asks for the parts


def test_an_ungrounded_answer_is_published_marked_and_stored(
    make_daemon: Callable[..., RunningDaemon], schema_pb2: ModuleType
) -> None:
    """An invented service and number reach subscribers and the store, with passed = false."""
    server = OllamaServer([("ok", INVENTED)])
    try:
        d = make_daemon(**{"llm.host": server.host, "analysis.batch_window": "200ms"})
        d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1, severity=2)))
        done = _collect(d, "analysis.completed")[-1]
    finally:
        server.close()
    assert done["text"] == "".join(INVENTED)  # shown as written, not hidden
    g = done["grounding"]
    assert g["passed"] is False
    assert g["unknown_services"] == ["inventory-db"]
    assert g["unmatched_numbers"] == ["97%"]
    assert g["root_cause"] == "differs_unexplained"
    assert any("inventory-db" in p for p in g["problems"])
    json_format.ParseDict(done, schema_pb2.Event(), ignore_unknown_fields=False)
    assert d.daemon.store.analysis(done["analysis_id"])["grounding"]["passed"] is False
    assert [a["grounded"] for a in d.daemon.store.analyses()] == [False]


def test_the_facts_only_summary_is_checked_too(
    make_daemon: Callable[..., RunningDaemon], schema_pb2: ModuleType
) -> None:
    """With the LLM off, the summary carries parts and passes its own grounding checks."""
    d = make_daemon(**{"analysis.enabled": False, "analysis.batch_window": "200ms"})
    d.daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, incident(1, severity=2)))
    done = _collect(d, "analysis.completed")[-1]
    assert done["fallback"] is True
    assert done["grounding"]["passed"] is True, done["grounding"]
    assert done["parts"][0]["root_cause"] == {"service": "payments", "operation": "POST /charge"}
    json_format.ParseDict(done, schema_pb2.Event(), ignore_unknown_fields=False)
