"""LLM token overhead: from a token leaving Ollama to the same token leaving spanwatch.

An Ollama-protocol server streams tokens at a fixed rate, each token's text being the time it
was sent. The reference reads that stream with the official ``ollama`` client directly; the
measured path is a running daemon (analysis stage → hub → WebSocket) read by a WebSocket
subscriber. Both in the same run, several rounds; the overhead is the difference of their
lag quantiles.

Usage: python benchmarks/llm_tokens.py [--tokens 400] [--rate 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from typing import Any

import ollama
from websockets.asyncio.client import connect

from _common import write_results
from spanwatch.analyze.testing import OllamaServer
from spanwatch.config import load
from spanwatch.daemon import Daemon
from spanwatch.model import Event, EventType, Evidence, Incident, Operation, Pattern, Severity


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def reference(host: str, tokens: int) -> list[float]:
    client = ollama.AsyncClient(host=host)
    lags = []
    async for part in await client.chat(model="bench", messages=[], stream=True):
        now = time.time_ns()
        if not part.done:
            lags.append((now - int(part.message.content)) / 1e6)
    assert len(lags) == tokens
    return lags


async def through_spanwatch(daemon: Daemon, n: int, tokens: int) -> list[float]:
    lags = []
    async with connect(f"ws://127.0.0.1:{daemon.ws.port}/events") as ws:
        await asyncio.sleep(0.1)
        daemon.hub.publish(Event.incident(EventType.INCIDENT_OPENED, _incident(n)))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            now = time.time_ns()
            if message["type"] == "analysis.token":
                lags.append((now - int(message["text"])) / 1e6)
            elif message["type"] in ("analysis.completed", "analysis.failed"):
                break
    assert len(lags) == tokens, len(lags)
    return lags


def _incident(n: int) -> Incident:
    return Incident(
        id=f"bench-{n}",
        severity=Severity.SEV1,
        pattern=Pattern.ERROR_BURST,
        service="svc",
        operation="op",
        root_cause=Operation("svc", "op"),
        started_at_ns=1,
        detected_at_ns=2,
        evidence=Evidence("error_rate", 0.5, 0.01, "ratio"),
        summary="bench",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--rate", type=int, default=200, help="tokens per second")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = OllamaServer([("timed", args.tokens, args.rate)])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_daemon_loop(coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(60)

    with tempfile.TemporaryDirectory() as data:
        config = load(
            env={"SPANWATCH_LOG__LEVEL": "warning"},
            overrides={
                "receiver.grpc_listen": "127.0.0.1:0",
                "receiver.http_listen": "127.0.0.1:0",
                "publish.ws_listen": "127.0.0.1:0",
                "storage.data_dir": data,
                "llm.host": server.host,
                "analysis.batch_window": "10ms",
            },
        )
        daemon = Daemon(config)
        on_daemon_loop(daemon.start())
        ref: list[float] = []
        ours: list[float] = []
        try:
            for n in range(args.rounds):
                ref += asyncio.run(reference(server.host, args.tokens))
                ours += asyncio.run(through_spanwatch(daemon, n, args.tokens))
        finally:
            on_daemon_loop(daemon.stop())
            loop.call_soon_threadsafe(loop.stop)
            server.close()
    figures = {
        "reference_p50_ms": _quantile(ref, 0.5),
        "reference_p99_ms": _quantile(ref, 0.99),
        "spanwatch_p50_ms": _quantile(ours, 0.5),
        "spanwatch_p99_ms": _quantile(ours, 0.99),
    }
    figures["overhead_p50_ms"] = figures["spanwatch_p50_ms"] - figures["reference_p50_ms"]
    figures["overhead_p99_ms"] = figures["spanwatch_p99_ms"] - figures["reference_p99_ms"]
    print(f"{args.rounds} x {args.tokens} tokens at {args.rate}/s")
    print(
        f"  reference (ollama client reads Ollama)   p50 {figures['reference_p50_ms']:6.2f} ms"
        f"  p99 {figures['reference_p99_ms']:6.2f} ms  mean {statistics.mean(ref):.2f} ms"
    )
    print(
        f"  spanwatch (Ollama → daemon → WebSocket)  p50 {figures['spanwatch_p50_ms']:6.2f} ms"
        f"  p99 {figures['spanwatch_p99_ms']:6.2f} ms  mean {statistics.mean(ours):.2f} ms"
    )
    print(
        f"  overhead                                 p50 {figures['overhead_p50_ms']:6.2f} ms"
        f"  p99 {figures['overhead_p99_ms']:6.2f} ms"
    )
    write_results(
        "llm_tokens", {"tokens": args.tokens, "rate": args.rate, "rounds": args.rounds, **figures}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
