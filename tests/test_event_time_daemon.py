"""Event time through the real daemon: a fleet with a broken clock, a lagging collector and two
environments; `spanwatch simulate` twice; a restart followed by older traffic."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from websockets.asyncio.client import connect

from spanwatch.model import SpanBatch, make_scope
from spanwatch.otlp import encode_batch
from spanwatch.sim import Simulator
from tests.conftest import DaemonProcess, simulate
from tests.test_event_time import WARMUP, YEAR, _batches, _lagging, _merged, _with_broken_span

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _send(proc: DaemonProcess, batches: Iterable[SpanBatch]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT)
        for batch in batches:
            export(encode_batch(batch).SerializeToString(), timeout=30)


def _messages(proc: DaemonProcess, quiet_s: float = 8.0, limit_s: float = 90.0) -> list[Any]:
    """Every message since the start, until none has come for ``quiet_s``."""

    async def read() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        url = f"ws://127.0.0.1:{proc.ws_port}/events?since=0"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        async with connect(url, max_queue=None) as ws:
            while loop.time() < deadline:
                try:
                    out.append(json.loads(await asyncio.wait_for(ws.recv(), quiet_s)))
                except TimeoutError:
                    break
        return out

    return asyncio.run(read())


def _opened(messages: list[Any]) -> list[dict[str, Any]]:
    return [m["incident"] for m in messages if m["type"] == "incident.opened"]


def _metrics(proc: DaemonProcess) -> str:
    with urllib.request.urlopen(f"{proc.http_url}/metrics") as resp:
        text: str = resp.read().decode()
    return text


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if re.match(rf"{name}[ {{]", line) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_a_fleet_with_a_broken_clock_a_lagging_collector_and_two_environments(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """Prod has a fault, staging (the same services) has none; one browser span is stamped a
    year ahead; staging's payments come through a collector a minute behind. One incident, in
    prod, at its root cause; the broken span is corrected, counted and logged; the lag shows."""
    proc = daemon_process("--no-llm")
    proc.wait_ready()
    prod = _batches(seed=8, scope=make_scope(["shop", "prod"]))
    staging = list(Simulator(seed=9, scope=make_scope(["shop", "staging"])).batches(WARMUP + 420))
    fleet = _with_broken_span(list(_merged(prod, _lagging(staging, "payments", 60))), 300, YEAR)
    _send(proc, fleet[:-30])
    metrics = _metrics(proc)  # while the lagging source still sends
    _send(proc, fleet[-30:])
    opened = _opened(_messages(proc))
    assert [(i["pattern"], i["root_cause"]["service"], i["environment"]) for i in opened] == [
        ("error_burst", "payments", "prod")
    ]
    assert opened[0]["namespace"] == "shop"
    lag = _metric(metrics, "spanwatch_detector_source_lag_seconds", service="payments")
    assert 50 <= lag <= 70
    metrics = _metrics(proc)
    service = fleet[300].service[0]
    assert (
        _metric(
            metrics, "spanwatch_detector_corrected_spans_total", service=service, direction="ahead"
        )
        == 1
    )
    late = _metric(metrics, "spanwatch_detector_late_spans")
    assert late < 2000  # staging payments' first minute, before it was seen lagging
    assert proc.terminate() == 0
    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    (skewed,) = [line for line in lines if "clock is off the fleet's" in line["event"]]
    assert skewed["instance"] == "b-1"
    assert skewed["kind"] == "ahead"
    assert abs(skewed["skew_s"] - YEAR / 1e9) < 5


def test_simulate_twice_and_a_restart_followed_by_older_traffic(
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    """A second `spanwatch simulate` sends traffic older than the first one's: it starts a new
    epoch and its fault is found as the first run's was. The same after a restart."""
    proc = daemon_process("--no-llm")
    proc.wait_ready()
    simulate(proc, "error_burst", 1000)
    simulate(proc, "error_burst", 1000)
    messages = _messages(proc)
    opened = _opened(messages)
    assert [(i["pattern"], i["root_cause"]["service"]) for i in opened] == [
        ("error_burst", "payments"),
        ("error_burst", "payments"),
    ]
    metrics = _metrics(proc)
    assert _metric(metrics, "spanwatch_detector_epochs_total") == 1
    assert _metric(metrics, "spanwatch_detector_late_spans") == 0
    assert proc.terminate() == 0
    assert "a new epoch starts" in proc.log()

    again = daemon_process("--no-llm")
    again.wait_ready()
    simulate(again, "error_burst", 1000)
    opened = _opened(_messages(again))
    assert [(i["pattern"], i["root_cause"]["service"]) for i in opened][-1:] == [
        ("error_burst", "payments")
    ]
    assert _metric(_metrics(again), "spanwatch_detector_epochs_total") == 2
