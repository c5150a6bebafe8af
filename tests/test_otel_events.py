"""OTel events out, received by a real in-process OTLP LogsService gRPC server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.conftest import RunningDaemon, free_port
from tests.events import analysis_events, opened
from tests.otlp_logs import LogsCollector


def test_incident_and_analysis_events_arrive_as_named_log_records(
    make_daemon: Callable[..., RunningDaemon], collector: tuple[LogsCollector, int]
) -> None:
    """Each event is a log record named spanwatch.<type>, linked to the example span."""
    servicer, port = collector
    d = make_daemon(**{"events.enabled": "true", "events.endpoint": f"http://127.0.0.1:{port}"})
    events = [opened(1, severity=1), *analysis_events("a1", ["inc-1"], ["one ", "two"])]
    for event in events:
        d.daemon.hub.publish(event)
    # started + completed + the incident; tokens are not exported as log records
    records = servicer.wait(3)
    names = [r["event_name"] for r in records]
    assert names == [
        "spanwatch.incident.opened",
        "spanwatch.analysis.started",
        "spanwatch.analysis.completed",
    ]
    incident, _started, completed = records
    for record in records:
        assert record["_trace_id"] == "5b8efff798038103d269b633813fc60c"
        assert record["_span_id"] == "eee19b7ec3c1b174"
    assert incident["severity_number"] == "SEVERITY_NUMBER_FATAL"
    body = json.dumps(incident["body"])
    assert "error_burst" in body and "inc-1" in body
    attrs = {a["key"]: a["value"] for a in incident["attributes"]}  # type: ignore[union-attr]
    assert attrs["spanwatch.incident.pattern"] == {"string_value": "error_burst"}
    assert attrs["spanwatch.incident.severity"] == {"int_value": "1"}
    assert "one two" in json.dumps(completed["body"])
    resource = {a["key"]: a["value"] for a in incident["_resource"]["attributes"]}  # type: ignore[index]
    assert resource["service.name"] == {"stringValue": "spanwatch"}


def test_an_unreachable_endpoint_never_blocks_the_hub(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """With the OTLP endpoint down, publishing and shutdown stay prompt."""
    dead = free_port()
    d = make_daemon(
        **{
            "events.enabled": "true",
            "events.endpoint": f"http://127.0.0.1:{dead}",
            "events.export_timeout": "1s",
            "events.queue_size": 64,
        }
    )
    started = time.monotonic()
    for n in range(3000):
        d.daemon.hub.publish(opened(n))
    deadline = time.monotonic() + 10
    while d.daemon.hub.seq < 3000:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert time.monotonic() - started < 5
    stop_started = time.monotonic()
    d.stop()
    assert time.monotonic() - stop_started < 6
