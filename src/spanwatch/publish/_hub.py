"""The hub: stamps ``seq``, keeps a replay ring, fans out to subscribers and listeners.

Every message is encoded to JSON once and the same text goes to every subscriber. Each
subscriber has a bounded queue; one that falls behind is cut off (and resumes with
``?since=``) instead of slowing the hub or its neighbours. :meth:`Hub.publish` may be called
from any thread; fan-out happens on the event loop that owns the subscribers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from spanwatch.errors import SpanwatchError
from spanwatch.model import Event, rfc3339_ns

log = structlog.get_logger("spanwatch.hub")

Listener = Callable[[dict[str, Any]], None]
# What a filter reads of an incident: (severity, services, environment, namespace).
Facts = tuple[int, frozenset[str], str, str]

_ANALYSIS_TYPES = frozenset(
    {"analysis.token", "analysis.completed", "analysis.failed", "rating.recorded"}
)


class SubscriberTooSlow(SpanwatchError):
    """The subscriber's queue overflowed; it must reconnect with ``?since=last_seq``."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(f"subscriber too slow: reconnect with ?since={last_seq}")
        self.last_seq = last_seq


@dataclass(frozen=True, slots=True)
class Filter:
    """Which messages a subscriber wants. Severity 1 is worst: ``min_severity=2`` keeps 1–2.

    ``service`` matches an incident's own service, its root cause's and every service it
    spans; ``environment`` and ``namespace`` match the incident's ``environment``
    (``deployment.environment.name``) and ``namespace`` (``service.namespace``) exactly, so an
    incident without one does not match. Every condition that is set must hold."""

    min_severity: int = 5
    service: str = ""
    environment: str = ""
    namespace: str = ""

    @property
    def active(self) -> bool:
        return (
            self.min_severity < 5
            or bool(self.service)
            or bool(self.environment)
            or bool(self.namespace)
        )

    def wants(
        self, severity: int, services: frozenset[str], environment: str = "", namespace: str = ""
    ) -> bool:
        return (
            severity <= self.min_severity
            and (not self.service or self.service in services)
            and (not self.environment or self.environment == environment)
            and (not self.namespace or self.namespace == namespace)
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    type: str
    message: dict[str, Any]
    text: str


class Subscription:
    """A subscriber's view of the stream: replayed entries first, then live ones."""

    def __init__(self, hub: Hub, flt: Filter, limit: int) -> None:
        self._hub = hub
        self._filter = flt
        self._limit = limit
        self._queue: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._analyses: OrderedDict[str, None] = OrderedDict()
        self.overflowed = False
        self.last_seq = 0  # the last seq handed to the subscriber
        # Called once, on the loop, when the queue overflows: lets the connection stop a send
        # that is blocked on a client that does not read, instead of waiting for it.
        self.on_overflow: Callable[[], object] | None = None
        # Writes a message straight to the connection when it is not backed up; False when it
        # cannot (then the message waits in the queue). Used only while the queue is empty, so
        # order is kept. This is the cheap path for fan-out to many subscribers.
        self.direct: Callable[[str], bool] | None = None

    def _offer(self, entry: _Entry) -> None:
        if self.overflowed or not self._passes(entry):
            return
        if not self._queue and self.direct is not None and self.direct(entry.text):
            self.last_seq = entry.seq
            return
        if len(self._queue) >= self._limit:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self._queue.append(entry)
        self._wake.set()

    def _passes(self, entry: _Entry) -> bool:
        flt = self._filter
        if not flt.active:
            return True
        message = entry.message
        if entry.type.startswith("incident."):
            return flt.wants(*_facts_of(message["incident"]))
        if entry.type == "analysis.started":
            ids = message.get("incident_ids", ())
            if any(flt.wants(*self._hub.incident_facts(i)) for i in ids):
                self._analyses[message["analysis_id"]] = None
                if len(self._analyses) > 4096:
                    self._analyses.popitem(last=False)
                return True
            return False
        if entry.type in _ANALYSIS_TYPES:
            return message.get("analysis_id") in self._analyses
        return True

    async def next(self) -> str:
        """The next message's JSON text; raises :class:`SubscriberTooSlow` after an overflow."""
        while not self._queue:
            if self.overflowed:
                raise SubscriberTooSlow(self.last_seq)
            self._wake.clear()
            await self._wake.wait()
        if self.overflowed:
            raise SubscriberTooSlow(self.last_seq)
        entry = self._queue.popleft()
        self.last_seq = entry.seq
        return entry.text

    def close(self) -> None:
        self._hub._subscribers.discard(self)


class Hub:
    def __init__(
        self, registry: CollectorRegistry, ring_size: int = 10_000, queue_size: int = 1024
    ) -> None:
        self._ring: deque[_Entry] = deque(maxlen=ring_size)
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self._incidents: OrderedDict[str, Facts] = OrderedDict()
        self._incident_cap = ring_size
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._published = Counter(
            "spanwatch_hub_events", "Events published, by type.", ["type"], registry=registry
        )
        self.slow_disconnects = Counter(
            "spanwatch_hub_slow_subscribers",
            "Subscribers cut off because their queue overflowed.",
            registry=registry,
        )
        Gauge(
            "spanwatch_hub_subscribers", "Connected subscribers.", registry=registry
        ).set_function(lambda: len(self._subscribers))

    @property
    def seq(self) -> int:
        """The seq of the last published message (0 before the first)."""
        return self._seq

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def oldest_seq(self) -> int:
        return self._ring[0].seq if self._ring else self._seq + 1

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the hub to the event loop that serves its subscribers."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(message)`` for every message, on the loop; it must not block."""
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        """Publish from any thread. Off the loop thread the fan-out is scheduled on the loop."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._publish(event)
        else:
            loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: Event) -> None:
        self._seq += 1
        message: dict[str, Any] = {
            "type": event.type,
            "seq": self._seq,
            "time": rfc3339_ns(time.time_ns()),
            **event.fields,
        }
        if event.type.startswith("incident."):
            incident = message["incident"]
            self._incidents[incident["id"]] = _facts_of(incident)
            self._incidents.move_to_end(incident["id"])
            if len(self._incidents) > self._incident_cap:
                self._incidents.popitem(last=False)
        entry = _Entry(self._seq, event.type, message, json.dumps(message, ensure_ascii=False))
        self._ring.append(entry)
        self._published.labels(event.type).inc()
        for subscription in self._subscribers:
            was_overflowed = subscription.overflowed
            subscription._offer(entry)
            if subscription.overflowed and not was_overflowed:
                self.slow_disconnects.inc()
                log.warning("subscriber too slow, disconnecting", last_seq=subscription.last_seq)
        for listener in self._listeners:
            try:
                listener(message)
            except Exception:
                log.exception("event listener failed", listener=repr(listener))

    def incident_facts(self, incident_id: str) -> Facts:
        """(severity, services, environment, namespace) of a recently published incident, what
        :meth:`Filter.wants` reads; (5, {}, "", "") when unknown."""
        return self._incidents.get(incident_id, (5, frozenset(), "", ""))

    def subscribe(self, since: int | None = None, flt: Filter | None = None) -> Subscription:
        """Subscribe to live messages; with ``since``, first replay what followed it.

        Messages after ``since`` that have already left the ring cannot be replayed: the caller
        can compare ``since + 1`` with :attr:`oldest_seq` to tell the subscriber.
        """
        subscription = Subscription(self, flt or Filter(), self._queue_size)
        if since is not None:
            subscription.last_seq = since
            replay = [entry for entry in self._ring if entry.seq > since]
            # The replay is made of entries the ring holds anyway: it does not count as lag.
            subscription._limit += len(replay)
            for entry in replay:
                subscription._offer(entry)
        self._subscribers.add(subscription)
        return subscription

    def recent(self, type_prefix: str = "") -> list[dict[str, Any]]:
        """Messages still in the ring, oldest first, optionally of one type family."""
        return [e.message for e in self._ring if e.type.startswith(type_prefix)]


def _facts_of(incident: dict[str, Any]) -> Facts:
    return (
        incident["severity"],
        _services_of(incident),
        str(incident.get("environment") or ""),
        str(incident.get("namespace") or ""),
    )


def _services_of(incident: dict[str, Any]) -> frozenset[str]:
    services = {incident.get("service", "")}
    services.update(incident.get("services", ()))
    root = incident.get("root_cause") or {}
    services.add(root.get("service", ""))
    services.discard("")
    return frozenset(services)
