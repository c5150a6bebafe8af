"""The WebSocket stream of a running daemon, with real ``websockets`` clients."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from spanwatch.model import Event, EventType
from tests.conftest import RunningDaemon
from tests.events import analysis_events, incident, opened


def ws_url(d: RunningDaemon, query: str = "") -> str:
    return f"ws://127.0.0.1:{d.daemon.ws.port}/events" + (f"?{query}" if query else "")


def publish(d: RunningDaemon, events: list[Event]) -> None:
    for event in events:
        d.daemon.hub.publish(event)


async def receive(ws: ClientConnection, count: int, within: float = 20) -> list[dict[str, Any]]:
    async def take() -> list[dict[str, Any]]:
        return [json.loads(await ws.recv()) for _ in range(count)]

    return await asyncio.wait_for(take(), within)


def test_messages_arrive_in_order_with_increasing_seq(daemon: RunningDaemon) -> None:
    """Every message is a JSON object with type and seq, in publication order."""

    async def scenario() -> list[dict[str, Any]]:
        async with connect(ws_url(daemon)) as ws:
            await asyncio.sleep(0.1)
            publish(
                daemon,
                [opened(n) for n in range(20)]
                + analysis_events("a1", ["inc-1"], ["The ", "root ", "cause"]),
            )
            return await receive(ws, 25)

    messages = asyncio.run(scenario())
    assert [m["seq"] for m in messages] == list(range(1, 26))
    assert [m["type"] for m in messages[20:]] == [
        "analysis.started",
        "analysis.token",
        "analysis.token",
        "analysis.token",
        "analysis.completed",
    ]
    assert "".join(m["text"] for m in messages[21:24]) == messages[24]["text"] == "The root cause"


def test_resume_after_reconnect_has_no_gap_and_no_duplicate(daemon: RunningDaemon) -> None:
    """A client that reconnects with ?since=<last seq> gets exactly what it missed."""

    async def scenario() -> list[int]:
        seen: list[int] = []
        # max_queue=None: the unread half stays in the client, which can still see the close.
        async with connect(ws_url(daemon), max_queue=None) as ws:
            await asyncio.sleep(0.1)
            publish(daemon, [opened(n) for n in range(60)])
            seen += [m["seq"] for m in await receive(ws, 30)]
        # disconnected: 30 more were published meanwhile, plus 30 it had not read
        publish(daemon, [opened(n) for n in range(60, 90)])
        async with connect(ws_url(daemon, f"since={seen[-1]}")) as ws:
            seen += [m["seq"] for m in await receive(ws, 60)]
            publish(daemon, [opened(90)])
            seen += [m["seq"] for m in await receive(ws, 1)]
        return seen

    assert asyncio.run(scenario()) == list(range(1, 92))


def test_since_older_than_the_ring_says_so(make_daemon: Callable[..., RunningDaemon]) -> None:
    """Resuming from a seq that has left the ring starts with a replay.gap message."""
    d = make_daemon(**{"publish.replay_ring": 100})
    publish(d, [opened(n) for n in range(250)])

    async def scenario() -> list[dict[str, Any]]:
        await asyncio.sleep(0.2)
        async with connect(ws_url(d, "since=10")) as ws:
            return await receive(ws, 101)

    messages = asyncio.run(scenario())
    gap = messages[0]
    assert gap["type"] == "replay.gap"
    assert (gap["requested_since"], gap["oldest_available"]) == (10, 151)
    assert "left the replay ring" in gap["message"]
    assert [m["seq"] for m in messages[1:]] == list(range(151, 251))


def test_filters_by_severity_and_service(daemon: RunningDaemon) -> None:
    """?min_severity= and ?service= narrow incidents and the analyses that cover them."""

    async def scenario() -> tuple[list[str], list[str]]:
        async with (
            connect(ws_url(daemon, "min_severity=1")) as sev1,
            connect(ws_url(daemon, "service=inventory")) as inventory,
        ):
            await asyncio.sleep(0.1)
            publish(
                daemon,
                [
                    opened(1, severity=1),
                    opened(2, severity=3, service="inventory"),
                    opened(3, severity=2),
                ]
                + analysis_events("a1", ["inc-1"], ["x"])
                + [opened(4, severity=1)],
            )
            first = [
                m["type"] + ":" + str(m.get("analysis_id") or m["incident"]["id"])
                for m in await receive(sev1, 5)
            ]
            second = [m["incident"]["id"] for m in await receive(inventory, 1)]
            return first, second

    first, second = asyncio.run(scenario())
    assert first == [
        "incident.opened:inc-1",
        "analysis.started:a1",
        "analysis.token:a1",
        "analysis.completed:a1",
        "incident.opened:inc-4",
    ]
    assert second == ["inc-2"]


def scoped(n: int, namespace: str, environment: str, severity: int = 2) -> Event:
    """An incident of a service in ``namespace`` and ``environment`` (empty: not set)."""
    resource = (("service.namespace", namespace), ("deployment.environment.name", environment))
    inc = replace(incident(n, severity=severity), resource=tuple((k, v) for k, v in resource if v))
    return Event.incident(EventType.INCIDENT_OPENED, inc)


def test_filters_by_environment_and_namespace(daemon: RunningDaemon) -> None:
    """?environment= and ?namespace= keep the incidents of that deployment environment and
    service namespace, exactly (one without it set does not match), and the analyses that
    cover one of them; combined with each other and with the other filters, all must hold."""
    queries = {
        "prod": "environment=prod",
        "shop": "namespace=shop",
        "shop-prod-sev1": "namespace=shop&environment=prod&min_severity=1",
        "nowhere": "environment=prod&service=nothing-runs-here",
    }

    async def scenario() -> dict[str, list[str]]:
        clients = {name: await connect(ws_url(daemon, q)) for name, q in queries.items()}
        try:
            await asyncio.sleep(0.1)
            publish(
                daemon,
                [
                    scoped(1, "shop", "prod", severity=1),
                    scoped(2, "shop", "staging"),
                    scoped(3, "billing", "prod"),
                    scoped(4, "", ""),  # neither set
                    scoped(5, "shop", "prod", severity=2),
                ]
                + analysis_events("a-staging", ["inc-2"], ["x"])
                + analysis_events("a-prod", ["inc-3", "inc-4"], ["y"])
                + analysis_events("a-unknown", ["inc-99"], ["z"])
                # the end marker: every client but "nowhere" wants it
                + [scoped(6, "shop", "prod", severity=1)],
            )
            counts = {"prod": 7, "shop": 7, "shop-prod-sev1": 2}
            got = {
                name: [
                    m["type"].split(".")[0] + ":" + str(m.get("analysis_id") or m["incident"]["id"])
                    for m in await receive(clients[name], count)
                ]
                for name, count in counts.items()
            }
            # "nowhere" matches nothing: after the others had all theirs, it has had nothing
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(clients["nowhere"].recv(), 0.3)
            return got
        finally:
            for ws in clients.values():
                await ws.close()

    got = asyncio.run(scenario())
    # an analysis is started, one token, completed; a-prod covers inc-3 (prod) and inc-4 (no
    # environment), a-unknown an incident the hub never saw
    assert got["prod"] == [
        "incident:inc-1",
        "incident:inc-3",
        "incident:inc-5",
        *["analysis:a-prod"] * 3,
        "incident:inc-6",
    ]
    assert got["shop"] == [
        "incident:inc-1",
        "incident:inc-2",
        "incident:inc-5",
        *["analysis:a-staging"] * 3,
        "incident:inc-6",
    ]
    assert got["shop-prod-sev1"] == ["incident:inc-1", "incident:inc-6"]


@pytest.mark.parametrize("query", ["since=abc", "min_severity=9", "since=-1"])
def test_bad_query_parameters_are_refused_at_the_handshake(
    daemon: RunningDaemon, query: str
) -> None:
    """An invalid since or min_severity gets HTTP 400 naming the parameter."""

    async def scenario() -> None:
        async with connect(ws_url(daemon, query)):
            pass

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(scenario())
    assert info.value.response.status_code == 400
    assert query.split("=")[0].encode() in info.value.response.body


def test_token_required_when_configured(make_daemon: Callable[..., RunningDaemon]) -> None:
    """No token → 401 at the handshake; a header or ?token= (for browsers) is accepted."""
    d = make_daemon(**{"auth.token": "t0k3n"})

    async def attempt(query: str = "", headers: dict[str, str] | None = None) -> int:
        try:
            async with connect(ws_url(d, query), additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                await receive(ws, 1)
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt()) == 401
    assert asyncio.run(attempt("token=wrong")) == 401
    assert asyncio.run(attempt(headers={"Authorization": "Bearer t0k3n"})) == 101
    assert asyncio.run(attempt("token=t0k3n")) == 101


def test_origin_allow_list(make_daemon: Callable[..., RunningDaemon]) -> None:
    """Browsers from other origins are refused unless listed; the page's own origin works."""
    d = make_daemon(**{"publish.allowed_origins": ["https://grafana.example.com"]})
    own = f"http://127.0.0.1:{d.daemon.ws.port}"

    async def attempt(origin: str) -> int:
        try:
            async with connect(ws_url(d), origin=origin):  # type: ignore[arg-type]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt("https://evil.example")) == 403
    assert asyncio.run(attempt("https://grafana.example.com")) == 101
    assert asyncio.run(attempt(own)) == 101


@pytest.mark.parametrize(
    ("send", "code", "reason"),
    [
        (b"\x00\x01binary", 1003, "binary messages are not accepted"),
        ("this is not json", 1007, "messages must be JSON objects"),
        ("[1, 2, 3]", 1007, "messages must be JSON objects"),
        ('{"type": "drop_tables"}', 1008, "unknown message type 'drop_tables'"),
        ("x" * 70_000, 1009, ""),
    ],
)
def test_garbage_from_a_client_closes_it_with_a_reason(
    daemon: RunningDaemon, send: str | bytes, code: int, reason: str
) -> None:
    """Garbage gets a close frame with a code and reason; the server keeps serving others."""

    async def scenario() -> tuple[int, str]:
        async with connect(ws_url(daemon), max_size=None) as ws:
            await ws.send(send)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None
            return info.value.rcvd.code, info.value.rcvd.reason

    got_code, got_reason = asyncio.run(scenario())
    assert got_code == code
    assert reason in got_reason

    async def still_serving() -> str:
        async with connect(ws_url(daemon)) as ws:
            await ws.send(json.dumps({"type": "ping", "request_id": "p"}))
            return str((await receive(ws, 1))[0]["type"])

    assert asyncio.run(still_serving()) == "pong"


def test_rating_over_the_websocket(daemon: RunningDaemon) -> None:
    """A rate message is validated, acknowledged, and announced as rating.recorded."""

    async def scenario() -> list[dict[str, Any]]:
        async with connect(ws_url(daemon)) as ws:
            await asyncio.sleep(0.1)
            publish(daemon, analysis_events("a9", ["inc-1"], ["text"]))
            await receive(ws, 3)
            replies = []
            for request in (
                {"type": "rate", "request_id": "1", "analysis_id": "nope", "rating": "good"},
                {"type": "rate", "request_id": "2", "analysis_id": "a9", "rating": "meh"},
                {
                    "type": "rate",
                    "request_id": "3",
                    "analysis_id": "a9",
                    "rating": "bad",
                    "correction": "The database ran out of connections.",
                },
            ):
                await ws.send(json.dumps(request))
                replies += await receive(ws, 1)
            replies += await receive(ws, 1)  # the broadcast
            return replies

    missing, invalid, *last_two = asyncio.run(scenario())
    by_type = {m["type"]: m for m in last_two}
    ok, recorded = by_type["rate.ok"], by_type["rating.recorded"]
    assert (missing["type"], missing["status"], missing["request_id"]) == ("rate.error", 404, "1")
    assert "no finished analysis with id 'nope'" in missing["error"]
    assert (invalid["status"], invalid["request_id"]) == (400, "2")
    assert "rating must be 'good' or 'bad'" in invalid["error"]
    assert ok["rating"]["rating"] == "bad" and ok["request_id"] == "3"
    assert recorded["seq"] == 4
    assert recorded["rating"]["correction"] == "The database ran out of connections."
    assert recorded["stats"] == {"total": 1, "good": 0, "bad": 1, "corrected": 1}
    # Replies carry the seq the client has reached, never a new one.
    assert [missing["seq"], invalid["seq"], ok["seq"]] == [3, 3, 4]


def test_a_client_that_never_reads_does_not_hold_up_fifty_others(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    """50 readers get every message while one non-reader is cut off with code 1013."""
    d = make_daemon(**{"publish.subscriber_queue": 64, "publish.replay_ring": 5000})
    total = 500
    filler = "x" * 16_000  # 8 MB in all: more than the kernel buffers absorb for one client

    async def reader(ws: ClientConnection) -> list[int]:
        return [json.loads(await ws.recv())["seq"] for _ in range(total)]

    async def scenario() -> tuple[list[list[int]], int, str]:
        # max_queue=1: the client stops reading its socket once one message is waiting.
        async with connect(ws_url(d), max_queue=1, ping_interval=None) as stuck:
            readers = [await connect(ws_url(d), max_size=None) for _ in range(50)]
            await asyncio.sleep(0.2)
            tasks = [asyncio.create_task(reader(ws)) for ws in readers]
            # About 250 messages a second, a fast LLM's token rate, in steps of 5.
            for n in range(total):
                d.daemon.hub.publish(
                    Event("analysis.token", {"analysis_id": "a", "text": filler, "n": n})
                )
                if n % 5 == 4:
                    await asyncio.sleep(0.02)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            for ws in readers:
                await ws.close()
            # The stuck client's socket was never drained: read until the close frame arrives.
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(stuck.recv(), 30)
            assert info.value.rcvd is not None
            return results, info.value.rcvd.code, info.value.rcvd.reason

    results, code, reason = asyncio.run(scenario())
    assert all(r == list(range(1, total + 1)) for r in results)
    assert code == 1013
    assert "too slow: reconnect with ?since=" in reason
    assert d.metric("spanwatch_hub_slow_subscribers_total") == 1


def test_the_listener_serves_the_page_and_a_health_check(daemon: RunningDaemon) -> None:
    """GET / on the WebSocket port is the live page, with a restrictive CSP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.daemon.ws.port}/") as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert "<title>spanwatch" in body and "textContent" in body
    assert "innerHTML" not in body
