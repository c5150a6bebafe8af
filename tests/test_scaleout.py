"""Scale-out: two daemons behind a service-keyed load balancer, each owning its services."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from spanwatch.sim import shop
from tests.conftest import RunningDaemon, simulate
from tests.service_router import ServiceRouter

pytestmark = pytest.mark.slow


def _incidents(d: RunningDaemon, quiet: float = 2.0) -> list[dict[str, Any]]:
    """Every incident.opened the daemon has published, read from its WebSocket replay."""

    async def read() -> list[dict[str, Any]]:
        opened: list[dict[str, Any]] = []
        async with connect(f"ws://127.0.0.1:{d.daemon.ws.port}/events?since=0") as ws:
            while True:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), quiet))
                except TimeoutError:
                    return opened
                if message["type"] == "incident.opened":
                    opened.append(message["incident"])

    return asyncio.run(read())


def test_each_daemon_sees_only_the_services_routed_to_it(
    make_daemon: Callable[..., RunningDaemon],
) -> None:
    a, b = make_daemon(), make_daemon()
    with ServiceRouter([a.grpc_target, b.grpc_target]) as router:
        simulate(router.target, "error_burst", 900)
        owner = {service: router.owner(service) for service in shop().services}
    for d in (a, b):
        own = {service for service, backend in owner.items() if backend == d.grpc_target}
        seen = {span.service for span in d.spans()}
        assert own, "the ring gives each daemon some services"
        assert seen == own
    # The fault (payments failing) is detected where payments' spans and baselines live.
    payments = a if owner["payments"] == a.grpc_target else b
    other = b if payments is a else a
    found = _incidents(payments)
    assert any(i["root_cause"]["service"] == "payments" for i in found), found
    for incident in _incidents(other):
        assert incident["service"] in {
            s for s, backend in owner.items() if backend == other.grpc_target
        }
