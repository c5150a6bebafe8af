"""The hub on its own: seq, replay ring, filters, bounded subscriber queues."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from prometheus_client import CollectorRegistry

from spanwatch.model import Event
from spanwatch.publish import Filter, Hub, SubscriberTooSlow, Subscription
from tests.events import analysis_events, opened


def _drain(sub: Subscription) -> list[dict[str, object]]:
    async def take() -> list[dict[str, object]]:
        out = []
        while sub._queue:
            out.append(json.loads(await sub.next()))
        return out

    return asyncio.run(take())


def test_seq_increases_by_one_per_message() -> None:
    """Every message gets the next seq, starting at 1."""
    hub = Hub(CollectorRegistry())
    sub = hub.subscribe()
    for n in range(5):
        hub.publish(opened(n))
    assert [m["seq"] for m in _drain(sub)] == [1, 2, 3, 4, 5]
    assert hub.seq == 5


def test_since_replays_what_followed_then_goes_live() -> None:
    """subscribe(since=N) first gets N+1.. from the ring, then live messages."""
    hub = Hub(CollectorRegistry())
    for n in range(10):
        hub.publish(opened(n))
    sub = hub.subscribe(since=7)
    hub.publish(opened(99))
    assert [m["seq"] for m in _drain(sub)] == [8, 9, 10, 11]


def test_ring_is_bounded_and_reports_its_oldest_seq() -> None:
    """The ring keeps replay_ring messages; older ones are gone and oldest_seq says so."""
    hub = Hub(CollectorRegistry(), ring_size=100)
    for n in range(250):
        hub.publish(opened(n))
    assert hub.oldest_seq == 151
    assert [m["seq"] for m in _drain(hub.subscribe(since=0))][:2] == [151, 152]


def test_a_full_queue_cuts_the_subscriber_off_but_not_the_others() -> None:
    """A subscriber that never reads overflows alone; the hub and the others carry on."""
    registry = CollectorRegistry()
    hub = Hub(registry, queue_size=16)
    slow, fast = hub.subscribe(), hub.subscribe()
    seen = []
    for n in range(40):
        hub.publish(opened(n))
        seen.extend(_drain(fast))
    assert len(seen) == 40
    assert slow.overflowed
    with pytest.raises(SubscriberTooSlow, match=r"reconnect with \?since=0"):
        asyncio.run(slow.next())
    assert registry.get_sample_value("spanwatch_hub_slow_subscribers_total") == 1


def test_replaying_a_full_ring_is_not_counted_as_lag() -> None:
    """A resume that replays more than the queue size is not cut off for it."""
    hub = Hub(CollectorRegistry(), ring_size=500, queue_size=16)
    for n in range(300):
        hub.publish(opened(n))
    sub = hub.subscribe(since=0)
    assert not sub.overflowed
    assert len(_drain(sub)) == 300


def test_filters_by_severity_and_service_follow_analyses_of_matching_incidents() -> None:
    """min_severity and service keep matching incidents and the analyses that cover them."""
    hub = Hub(CollectorRegistry())
    severe = hub.subscribe(flt=Filter(min_severity=2))
    payments = hub.subscribe(flt=Filter(service="inventory"))
    everything = hub.subscribe()
    hub.publish(opened(1, severity=1))
    hub.publish(opened(2, severity=4, service="inventory"))
    for event in analysis_events("a1", ["inc-1"], ["x"]) + analysis_events("a2", ["inc-2"], ["y"]):
        hub.publish(event)
    hub.publish(Event("rating.recorded", {"analysis_id": "a2"}))

    def summary(sub: Subscription) -> list[str]:
        return [
            f"{m['type']}:{m.get('analysis_id') or m['incident']['id']}"  # type: ignore[index]
            for m in _drain(sub)
        ]

    assert summary(severe) == [
        "incident.opened:inc-1",
        "analysis.started:a1",
        "analysis.token:a1",
        "analysis.completed:a1",
    ]
    assert summary(payments) == [
        "incident.opened:inc-2",
        "analysis.started:a2",
        "analysis.token:a2",
        "analysis.completed:a2",
        "rating.recorded:a2",
    ]
    assert len(summary(everything)) == 9


def test_publish_from_another_thread_is_delivered_on_the_loop() -> None:
    """publish() from a worker thread is handed to the loop; order is kept."""
    hub = Hub(CollectorRegistry())

    async def scenario() -> list[int]:
        hub.attach(asyncio.get_running_loop())
        sub = hub.subscribe()

        def worker() -> None:
            for n in range(50):
                hub.publish(opened(n))

        thread = threading.Thread(target=worker)
        thread.start()
        got = [json.loads(await sub.next())["incident"]["id"] for _ in range(50)]
        thread.join()
        return [int(i.split("-")[1]) for i in got]

    assert asyncio.run(scenario()) == list(range(50))


def test_a_failing_listener_does_not_stop_publishing() -> None:
    """A listener that raises is logged; other listeners and subscribers still get messages."""
    hub = Hub(CollectorRegistry())
    got: list[int] = []

    def broken(message: dict[str, object]) -> None:
        raise RuntimeError("bug")

    hub.add_listener(broken)
    hub.add_listener(lambda m: got.append(m["seq"]))  # type: ignore[arg-type]
    hub.publish(opened(1))
    assert got == [1]


def test_incident_message_has_the_contract_fields() -> None:
    """incident.* messages carry every field of DESIGN contract 5, in their formats."""
    hub = Hub(CollectorRegistry())
    sub = hub.subscribe()
    hub.publish(opened(1))
    (message,) = _drain(sub)
    assert message["type"] == "incident.opened" and message["seq"] == 1
    incident = message["incident"]
    assert isinstance(incident, dict)
    for key in (
        "id",
        "severity",
        "pattern",
        "service",
        "operation",
        "root_cause",
        "started_at",
        "detected_at",
        "trace_ids",
        "evidence",
        "summary",
    ):
        assert key in incident
    assert incident["severity"] == 2 and incident["pattern"] == "error_burst"
    assert incident["root_cause"] == {"service": "payments", "operation": "POST /charge"}
    assert incident["started_at"] == "2025-11-24T16:00:00.123456789Z"
    assert incident["trace_ids"] == ["5b8efff798038103d269b633813fc60c"]
    assert incident["evidence"]["observed"] == 0.42


def test_direct_writes_only_while_nothing_is_queued() -> None:
    """Once a message had to queue, later ones queue behind it: order is kept."""
    hub = Hub(CollectorRegistry())
    sub = hub.subscribe()
    written: list[int] = []
    backed_up = {3}

    def direct(text: str) -> bool:
        seq = json.loads(text)["seq"]
        if seq in backed_up:
            return False
        written.append(seq)
        return True

    sub.direct = direct
    for n in range(5):
        hub.publish(opened(n))
    assert written == [1, 2]
    assert [m["seq"] for m in _drain(sub)] == [3, 4, 5]
    hub.publish(opened(6))
    assert written == [1, 2, 6]
