"""Fan-out benchmark: a 200-tokens-per-second stream to 500 WebSocket subscribers.

A server process runs the real Hub and WebSocketServer and publishes ``analysis.token``
messages at the given rate; client processes hold the subscribers and record, for every
message, the delay from ``Hub.publish`` to its arrival (same machine, same clock). The
reference, measured in the same run, sends the same stream with websockets' own
``broadcast()`` and no hub: the library's floor for this fan-out. Figures: delivery lag
p50/p99 and the server's CPU (seconds per second of stream, i.e. share of one core).

Usage: python benchmarks/fanout.py [--subscribers 500] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time

from _common import free_port, write_results

# --- server ----------------------------------------------------------------------------------


async def serve(
    mode: str, port: int, subscribers: int, rate: int, seconds: float, out: multiprocessing.Queue
) -> None:
    import psutil
    from prometheus_client import CollectorRegistry
    from websockets.asyncio.server import broadcast
    from websockets.asyncio.server import serve as ws_serve

    from spanwatch.config import Auth, BearerToken, ListenAddress
    from spanwatch.model import Event
    from spanwatch.publish import Hub, WebSocketServer

    connections: set = set()
    if mode == "spanwatch":
        hub = Hub(CollectorRegistry(), ring_size=10_000, queue_size=1024)
        hub.attach(asyncio.get_running_loop())
        server = WebSocketServer(
            hub,
            BearerToken(Auth()),
            ListenAddress("127.0.0.1", port),
            rate=lambda body, rater: {},
            ping_interval=0,
        )
        await server.start()

        def connected() -> int:
            return len(hub._subscribers)

        def send(n: int) -> None:
            hub.publish(
                Event(
                    "analysis.token",
                    {"analysis_id": "bench", "text": f" tok{n}", "sent_ns": time.time_ns()},
                )
            )
    else:
        seq = 0

        async def handler(ws: object) -> None:
            connections.add(ws)
            try:
                await ws.wait_closed()  # type: ignore[attr-defined]
            finally:
                connections.discard(ws)

        plain = await ws_serve(handler, "127.0.0.1", port, compression=None, ping_interval=None)

        def connected() -> int:
            return len(connections)

        def send(n: int) -> None:
            nonlocal seq
            seq += 1
            broadcast(
                connections,
                json.dumps(
                    {
                        "type": "analysis.token",
                        "seq": seq,
                        "analysis_id": "bench",
                        "text": f" tok{n}",
                        "sent_ns": time.time_ns(),
                    }
                ),
            )

    out.put("ready")
    while connected() < subscribers:  # noqa: ASYNC110 - polling a count in a harness
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    proc = psutil.Process()
    before = proc.cpu_times()
    t0 = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        # Publish on a fixed schedule, like a model streaming tokens.
        delay = t0 + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send(n)
    send(-1)  # the end marker
    elapsed = time.perf_counter() - t0
    after = proc.cpu_times()
    await asyncio.sleep(2)
    cpu = (after.user - before.user) + (after.system - before.system)
    out.put({"cpu_s": cpu, "wall_s": elapsed, "messages": total})
    if mode == "spanwatch":
        await server.stop()
    else:
        plain.close()


def server_main(*args: object) -> None:
    asyncio.run(serve(*args))  # type: ignore[arg-type]


# --- clients ---------------------------------------------------------------------------------


async def subscribe(port: int, count: int, out: multiprocessing.Queue) -> None:
    from websockets.asyncio.client import connect

    lags: list[int] = []
    received = 0

    async def one() -> None:
        nonlocal received
        async with connect(
            f"ws://127.0.0.1:{port}/events", ping_interval=None, max_queue=None
        ) as ws:
            async for raw in ws:
                now = time.time_ns()
                message = json.loads(raw)
                if message["text"] == " tok-1":
                    return
                lags.append(now - message["sent_ns"])
                received += 1

    await asyncio.gather(*(one() for _ in range(count)))
    out.put({"lags": lags, "received": received})


def client_main(port: int, count: int, out: multiprocessing.Queue) -> None:
    asyncio.run(subscribe(port, count, out))


def run(mode: str, subscribers: int, rate: int, seconds: float, clients: int) -> dict:
    port = free_port()
    q: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(
        target=server_main, args=(mode, port, subscribers, rate, seconds, q)
    )
    server.start()
    assert q.get(timeout=30) == "ready"
    results: multiprocessing.Queue = multiprocessing.Queue()
    share = [
        subscribers // clients + (1 if i < subscribers % clients else 0) for i in range(clients)
    ]
    workers = [multiprocessing.Process(target=client_main, args=(port, n, results)) for n in share]
    for w in workers:
        w.start()
    stats = q.get(timeout=seconds + 120)
    lags: list[int] = []
    received = 0
    for _ in workers:
        part = results.get(timeout=120)
        lags += part["lags"]
        received += part["received"]
    for w in workers:
        w.join(10)
    server.join(10)
    lags.sort()
    expected = stats["messages"] * subscribers
    return {
        "p50_ms": lags[len(lags) // 2] / 1e6,
        "p99_ms": lags[int(len(lags) * 0.99)] / 1e6,
        "max_ms": lags[-1] / 1e6,
        "server_cpu_per_s": stats["cpu_s"] / stats["wall_s"],
        "delivered": received,
        "expected": expected,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rate", type=int, default=200, help="tokens per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    args = parser.parse_args()
    print(
        f"{args.rate} tokens/s to {args.subscribers} subscribers for {args.seconds:g}s "
        f"({args.rate * args.subscribers:,} deliveries/s), {os.cpu_count()} cores"
    )
    results = {}
    for mode in ("reference-broadcast", "spanwatch"):
        results[mode] = run(mode, args.subscribers, args.rate, args.seconds, args.clients)
        r = results[mode]
        print(
            f"  {mode:20s} lag p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
            f"max {r['max_ms']:8.2f} ms  server CPU {r['server_cpu_per_s']:.2f} s/s  "
            f"delivered {r['delivered']:,}/{r['expected']:,}"
        )
    ref, ours = results["reference-broadcast"], results["spanwatch"]
    print(
        f"spanwatch / reference: CPU {ours['server_cpu_per_s'] / ref['server_cpu_per_s']:.2f}x, "
        f"p50 {ours['p50_ms'] / ref['p50_ms']:.2f}x, p99 {ours['p99_ms'] / ref['p99_ms']:.2f}x"
    )
    write_results(
        "fanout",
        {
            "subscribers": args.subscribers,
            "rate": args.rate,
            "seconds": args.seconds,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
