"""Alert delivery: a real Alertmanager gets, groups and resolves incidents; retries, drops, HMAC."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from spanwatch.config import load
from spanwatch.model import Event, EventType, Pattern
from spanwatch.publish import Alerting, describe_evidence, format_value, sign, verify
from tests.conftest import RunningDaemon
from tests.events import incident
from tests.tools import Alertmanager, Recorder, alertmanager, wait_for


def _event(kind: EventType, n: int, **kwargs: Any) -> Event:
    inc = incident(n, **kwargs)
    if kind is EventType.INCIDENT_RESOLVED:
        from dataclasses import replace

        inc = replace(inc, resolved_at_ns=inc.detected_at_ns + 60_000_000_000)
    return Event.incident(kind, inc)


@pytest.fixture
def am(tmp_path: Path) -> Iterator[tuple[Alertmanager, Recorder]]:
    with alertmanager(tmp_path) as pair:
        yield pair


def _active(am: Alertmanager) -> dict[str, dict[str, Any]]:
    return {a["labels"]["incident_id"]: a for a in am.get("/api/v2/alerts?active=true")}


def test_incidents_appear_group_and_resolve_in_alertmanager(
    am: tuple[Alertmanager, Recorder], make_daemon: Callable[..., RunningDaemon]
) -> None:
    """Two SEV2 incidents of one service group into one Alertmanager notification; the SEV4 stays
    out; resolving one incident resolves its alert (and Alertmanager says so to its receiver)."""
    manager, receiver = am
    daemon = make_daemon(
        **{
            "alerts.alertmanager_url": manager.url,
            "alerts.resend_interval": "1s",
            "publish.trace_url": "https://tempo.example/trace/{trace_id}",
        }
    )
    hub = daemon.daemon.hub
    hub.publish(_event(EventType.INCIDENT_OPENED, 1, severity=2))
    hub.publish(_event(EventType.INCIDENT_OPENED, 2, severity=2))
    hub.publish(_event(EventType.INCIDENT_OPENED, 3, severity=4, service="search"))

    active = wait_for(lambda: (a := _active(manager)) and len(a) >= 2 and a, what="two alerts")
    assert set(active) == {"inc-1", "inc-2"}  # SEV4 is below alerts.min_severity (3)
    alert = active["inc-1"]
    assert alert["labels"] == {
        "alertname": "SpanwatchErrorBurst",
        "severity": "SEV2",
        "pattern": "error_burst",
        "service": "checkout",
        "operation": "POST /checkout",
        "root_cause_service": "payments",
        "root_cause_operation": "POST /charge",
        "incident_id": "inc-1",
    }
    page = f"http://127.0.0.1:{daemon.daemon.ws.port}/?incident=inc-1"
    assert alert["generatorURL"] == page
    assert alert["annotations"]["page"] == page
    assert alert["annotations"]["summary"] == "checkout: error rate 42% (baseline 1%)"
    assert alert["annotations"]["description"] == "error_rate 42% against a baseline of 1.0%"
    assert alert["annotations"]["trace"] == (
        "https://tempo.example/trace/5b8efff798038103d269b633813fc60c"
    )
    assert alert["status"]["state"] == "active"

    groups = manager.get("/api/v2/alerts/groups")
    ours = [g for g in groups if g["labels"].get("alertname") == "SpanwatchErrorBurst"]
    assert len(ours) == 1
    assert ours[0]["labels"] == {"alertname": "SpanwatchErrorBurst", "service": "checkout"}
    assert {a["labels"]["incident_id"] for a in ours[0]["alerts"]} == {"inc-1", "inc-2"}

    # One notification for the group: Alertmanager sends what the group holds at group_wait,
    # so under load the first can hold inc-1 alone, and the next (group_interval) both.
    def both(body: dict[str, Any]) -> bool:
        return {a["labels"]["incident_id"] for a in body["alerts"]} == {"inc-1", "inc-2"}

    wait_for(
        lambda: [b for b in receiver.bodies() if b["status"] == "firing" and both(b)],
        what="a notification of the group",
    )

    # Re-sent while open: the endsAt moves on.
    first_end = active["inc-2"]["endsAt"]
    wait_for(lambda: _active(manager)["inc-2"]["endsAt"] != first_end, what="a re-send")

    hub.publish(_event(EventType.INCIDENT_RESOLVED, 1, severity=2))
    wait_for(lambda: set(_active(manager)) == {"inc-2"}, what="inc-1 to resolve")

    def resolved() -> list[Any]:
        return [
            a
            for b in receiver.bodies()
            for a in b["alerts"]
            if a["labels"]["incident_id"] == "inc-1" and a["status"] == "resolved"
        ]

    wait_for(resolved, what="Alertmanager's resolved notification")
    assert daemon.metric("spanwatch_alerts_sent_total", sink="alertmanager") >= 3
    assert daemon.metric("spanwatch_alerts_active") == 1


def test_an_escalation_ends_the_alert_of_the_old_severity(
    am: tuple[Alertmanager, Recorder], make_daemon: Callable[..., RunningDaemon]
) -> None:
    """A SEV3 that becomes SEV1 leaves one active alert (SEV1), not two."""
    manager, _ = am
    daemon = make_daemon(**{"alerts.alertmanager_url": manager.url})
    daemon.daemon.hub.publish(_event(EventType.INCIDENT_OPENED, 7, severity=3))
    wait_for(lambda: "inc-7" in _active(manager), what="the SEV3 alert")
    daemon.daemon.hub.publish(_event(EventType.INCIDENT_UPDATED, 7, severity=1))

    def only_sev1() -> bool:
        alerts = manager.get("/api/v2/alerts?active=true")
        return [a["labels"]["severity"] for a in alerts] == ["SEV1"]

    wait_for(only_sev1, what="only the SEV1 alert")


def test_an_open_incident_is_followed_again_after_a_restart(
    am: tuple[Alertmanager, Recorder], tmp_path: Path
) -> None:
    """Incidents handed to seed() (open before a restart) are sent and followed again."""
    manager, _ = am
    settings = load(
        env={},
        overrides={"alerts.alertmanager_url": manager.url, "alerts.resend_interval": "1s"},
    ).alerts

    async def run() -> None:
        alerting = Alerting(settings, CollectorRegistry(), "http://page.example/")
        alerting.seed([incident(9, severity=1).to_dict()])
        alerting.start()
        try:
            await asyncio.sleep(0)
            for _ in range(100):
                if "inc-9" in await asyncio.to_thread(_active, manager):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("seeded alert not sent")
        finally:
            await alerting.stop()

    asyncio.run(run())


# -- delivery mechanics, against a fake destination -------------------------------------------


class _Flaky:
    """An aiohttp app that answers the first ``fail`` requests with ``status``."""

    def __init__(self, fail: int, status: int = 503) -> None:
        self.fail = fail
        self.status = status
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def handle(self, request: web.Request) -> web.Response:
        await self.hold.wait()
        self.calls.append((dict(request.headers), await request.read()))
        if len(self.calls) <= self.fail:
            return web.Response(status=self.status, text="not now")
        return web.Response(status=200)


async def _serve(app_handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", app_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _alerting(url: str, registry: CollectorRegistry, **overrides: Any) -> Alerting:
    settings = load(
        env={}, overrides={"alerts.alertmanager_url": url, "alerts.attempts": 4, **overrides}
    ).alerts
    return Alerting(settings, registry, "http://page.example/")


def _message(kind: EventType, n: int, seq: int = 1, **kwargs: Any) -> dict[str, Any]:
    event = _event(kind, n, **kwargs)
    return {"type": event.type, "seq": seq, "time": "t", **event.fields}


def test_retries_with_backoff_then_delivers() -> None:
    """Two 503s, then 200: the alert arrives on the third attempt and counts as sent."""

    async def run() -> None:
        flaky = _Flaky(fail=2)
        runner, url = await _serve(flaky.handle)
        registry = CollectorRegistry()
        alerting = _alerting(url, registry)
        alerting.start()
        try:
            alerting(_message(EventType.INCIDENT_OPENED, 1))
            for _ in range(100):
                if registry.get_sample_value(
                    "spanwatch_alerts_sent_total", {"sink": "alertmanager"}
                ):
                    break
                await asyncio.sleep(0.05)
            assert len(flaky.calls) == 3
            posted = json.loads(flaky.calls[-1][1])
            assert posted[0]["labels"]["incident_id"] == "inc-1"
            assert flaky.calls[-1][0]["Content-Type"] == "application/json"
        finally:
            await alerting.stop(flush_s=1)
            await runner.cleanup()

    asyncio.run(run())


def test_a_refusal_is_not_retried_and_is_counted() -> None:
    """A 400 is given up at once (counted as failed); the next alert is sent as usual."""

    async def run() -> None:
        flaky = _Flaky(fail=1, status=400)
        runner, url = await _serve(flaky.handle)
        registry = CollectorRegistry()
        alerting = _alerting(url, registry)
        alerting.start()
        try:
            alerting(_message(EventType.INCIDENT_OPENED, 1))
            for _ in range(100):
                if registry.get_sample_value(
                    "spanwatch_alerts_failed_total", {"sink": "alertmanager"}
                ):
                    break
                await asyncio.sleep(0.05)
            assert len(flaky.calls) == 1
            alerting(_message(EventType.INCIDENT_OPENED, 2, seq=2))
            for _ in range(100):
                if registry.get_sample_value(
                    "spanwatch_alerts_sent_total", {"sink": "alertmanager"}
                ):
                    break
                await asyncio.sleep(0.05)
            assert len(flaky.calls) == 2
        finally:
            await alerting.stop(flush_s=1)
            await runner.cleanup()

    asyncio.run(run())


def test_an_unreachable_alertmanager_gives_up_after_the_attempts() -> None:
    """Nothing listening: a bounded number of attempts, then the alert counts as failed."""
    from tests.conftest import free_port

    async def run() -> None:
        registry = CollectorRegistry()
        alerting = _alerting(f"http://127.0.0.1:{free_port()}", registry, **{"alerts.attempts": 2})
        alerting.start()
        started = time.monotonic()
        try:
            alerting(_message(EventType.INCIDENT_OPENED, 1))
            for _ in range(200):
                if registry.get_sample_value(
                    "spanwatch_alerts_failed_total", {"sink": "alertmanager"}
                ):
                    break
                await asyncio.sleep(0.05)
            assert (
                registry.get_sample_value("spanwatch_alerts_failed_total", {"sink": "alertmanager"})
                == 1
            )
            assert time.monotonic() - started < 5
        finally:
            await alerting.stop(flush_s=0.5)

    asyncio.run(run())


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    """While the destination hangs, alerts past alerts.queue_size are dropped and counted."""

    async def run() -> None:
        flaky = _Flaky(fail=0)
        flaky.hold.clear()
        runner, url = await _serve(flaky.handle)
        registry = CollectorRegistry()
        alerting = _alerting(url, registry, **{"alerts.queue_size": 10})
        alerting.start()
        try:
            alerting(_message(EventType.INCIDENT_OPENED, 0))
            await asyncio.sleep(0.2)  # the first is on its way, held by the server
            for n in range(1, 16):
                alerting(_message(EventType.INCIDENT_OPENED, n, seq=n))
            dropped = registry.get_sample_value(
                "spanwatch_alerts_dropped_total", {"sink": "alertmanager"}
            )
            assert dropped == 5
            flaky.hold.set()
            for _ in range(100):
                if (
                    registry.get_sample_value(
                        "spanwatch_alerts_sent_total", {"sink": "alertmanager"}
                    )
                    == 11
                ):
                    break
                await asyncio.sleep(0.05)
            sent = {a["labels"]["incident_id"] for _, body in flaky.calls for a in json.loads(body)}
            assert sent == {"inc-0", *(f"inc-{n}" for n in range(6, 16))}  # 1-5 dropped
        finally:
            await alerting.stop(flush_s=1)
            await runner.cleanup()

    asyncio.run(run())


def test_bearer_token_reaches_alertmanager(tmp_path: Path) -> None:
    """alerts.bearer_token_file is read and sent as Authorization: Bearer."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")

    async def run() -> None:
        flaky = _Flaky(fail=0)
        runner, url = await _serve(flaky.handle)
        alerting = _alerting(url, CollectorRegistry(), **{"alerts.bearer_token_file": str(token)})
        alerting.start()
        try:
            alerting(_message(EventType.INCIDENT_OPENED, 1))
            for _ in range(100):
                if flaky.calls:
                    break
                await asyncio.sleep(0.05)
            assert flaky.calls[0][0]["Authorization"] == "Bearer s3cret"
        finally:
            await alerting.stop(flush_s=1)
            await runner.cleanup()

    asyncio.run(run())


def test_webhook_bodies_are_signed(make_daemon: Callable[..., RunningDaemon]) -> None:
    """Each incident event at or above min_severity is POSTed once, signed with HMAC-SHA256."""
    receiver = Recorder()
    try:
        daemon = make_daemon(
            **{
                "alerts.webhook_url": receiver.url,
                "alerts.webhook_secret": "shh",
                "alerts.min_severity": 2,
            }
        )
        daemon.daemon.hub.publish(_event(EventType.INCIDENT_OPENED, 1, severity=1))
        daemon.daemon.hub.publish(
            _event(EventType.INCIDENT_OPENED, 2, severity=3, pattern=Pattern.LATENCY_SPIKE)
        )
        daemon.daemon.hub.publish(_event(EventType.INCIDENT_RESOLVED, 1, severity=1))
        wait_for(lambda: len(receiver.requests) >= 2, what="two webhook calls")
        time.sleep(0.3)
        assert len(receiver.requests) == 2  # the SEV3 is below min_severity=2
        kinds = []
        for headers, body in receiver.requests:
            assert verify("shh", headers, body)
            assert not verify("other", headers, body)
            assert not verify("shh", headers, body + b" ")
            payload = json.loads(body)
            assert headers["X-Spanwatch-Event"] == payload["type"]
            assert payload["incident"]["id"] == "inc-1"
            assert payload["page_url"].endswith("/?incident=inc-1")
            kinds.append(payload["type"])
        assert kinds == ["incident.opened", "incident.resolved"]
    finally:
        receiver.close()


def test_signature_is_hmac_of_timestamp_and_body() -> None:
    """The documented recipe: sha256=hex(HMAC(secret, timestamp + '.' + body)); old ones fail."""
    import hashlib
    import hmac

    body = b'{"a": 1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1700000000", body) == f"sha256={expected}"
    headers = {"X-Spanwatch-Timestamp": "1700000000", "X-Spanwatch-Signature": f"sha256={expected}"}
    assert verify("k", headers, body, now=1700000100)
    assert not verify("k", headers, body, now=1700001000)  # older than 5 minutes


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.42, "ratio", "42%"),
        (0.01, "ratio", "1.0%"),
        (0.000523, "ratio", "0.052%"),
        (45.193075, "ms", "45 ms"),
        (5.732867, "ms", "5.7 ms"),
        (1234.5, "ms", "1.23 s"),
        (3.0, "spans", "3 spans"),
        (1.0, "calls", "1 call"),
        (12.3456, "calls", "12.3 calls"),
        (250.7, "", "251"),
    ],
)
def test_numbers_are_rounded_to_what_matters(value: float, unit: str, text: str) -> None:
    """Evidence reads 45 ms and 42%, not 45.193075 and 0.42."""
    assert format_value(value, unit) == text


def test_evidence_sentence() -> None:
    """The alert's description says what was measured against what, rounded."""
    evidence = {"metric": "p99_latency", "observed": 45.193075, "baseline": 5.732867, "unit": "ms"}
    assert describe_evidence(evidence) == "p99_latency 45 ms against a baseline of 5.7 ms"
    assert describe_evidence({}) == ""
    following = {**evidence, "observed": 30.2, "peak": 61.5, "share": 0.42}
    assert describe_evidence(following) == (
        "p99_latency 30 ms against a baseline of 5.7 ms, worst 62 ms, 42% of spans affected"
    )


def test_an_alert_keeps_its_start_and_resolves_with_an_end_after_it() -> None:
    """Updates keep the first startsAt; the resolution's endsAt is now, not before the start."""

    async def run() -> None:
        flaky = _Flaky(fail=0)
        runner, url = await _serve(flaky.handle)
        alerting = _alerting(url, CollectorRegistry())
        alerting.start()
        try:
            for seq, kind in enumerate(
                (EventType.INCIDENT_OPENED, EventType.INCIDENT_UPDATED, EventType.INCIDENT_RESOLVED)
            ):
                alerting(_message(kind, 1, seq=seq))
                for _ in range(100):
                    if len(flaky.calls) > seq:
                        break
                    await asyncio.sleep(0.02)
            posted = [json.loads(body)[0] for _, body in flaky.calls]
            assert len(posted) == 3
            assert len({p["startsAt"] for p in posted}) == 1
            assert posted[0]["endsAt"] > posted[0]["startsAt"]
            assert posted[2]["endsAt"] < posted[1]["endsAt"]  # resolved: ends now
            assert posted[2]["endsAt"] >= posted[2]["startsAt"]
        finally:
            await alerting.stop(flush_s=1)
            await runner.cleanup()

    asyncio.run(run())
