"""Alert delivery: incidents to Prometheus Alertmanager (v2 API) and to a signed JSON webhook.

:class:`Alerting` is a hub listener. It behaves like Prometheus' rule evaluation as a source of
alerts: each incident at or above ``alerts.min_severity`` becomes one alert (its labels say what
and where, its incident id keeps it apart from others), sent at once and then again every
``resend_interval`` while it is open, with an ``endsAt`` a few intervals ahead; when the
incident resolves, the alert is sent with its final ``endsAt`` (and again for a while, in case a
send was lost). Alertmanager does grouping, silences, inhibition and routing.

Sending happens off the hub, on the event loop: each destination has a bounded queue (when it
is full the oldest alert is dropped and counted), sends with bounded, jittered retries
(tenacity) and never holds up the hub or the other destination. Failures are logged once per
run of failures and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from spanwatch import __version__
from spanwatch.errors import SpanwatchError

if TYPE_CHECKING:
    from spanwatch.config._schema import Alerts

log = structlog.get_logger("spanwatch.alerts")

ALERTS_PATH = "/api/v2/alerts"
SIGNATURE_HEADER = "X-Spanwatch-Signature"
TIMESTAMP_HEADER = "X-Spanwatch-Timestamp"
# Alertmanager takes a list of alerts per request; Prometheus sends up to 64 at a time.
MAX_BATCH = 64
# Alerts followed at once (open, and resolved within the retention); the oldest resolved go first.
MAX_TRACKED = 10_000


class DeliveryFailed(SpanwatchError):
    """A send failed in a way that another attempt may fix (network, timeout, 5xx, 429)."""


class DeliveryRefused(SpanwatchError):
    """The destination refused the request (4xx): sending it again will not help."""


# -- formatting --------------------------------------------------------------------------------


def format_value(value: Any, unit: str = "") -> str:
    """A measurement rounded to what matters: ``42%``, ``45 ms``, ``1.2 s``, ``3 spans``."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return str(value)
    if unit == "ratio":
        pct = n * 100
        return f"{pct:.0f}%" if abs(pct) >= 10 else f"{_sig(pct, 2)}%"
    if unit == "ms":
        if abs(n) >= 1000:
            return f"{_sig(n / 1000, 3)} s"
        return f"{n:.0f} ms" if abs(n) >= 10 else f"{_sig(n, 2)} ms"
    text = f"{n:.0f}" if n.is_integer() or abs(n) >= 100 else _sig(n, 3)
    if text == "1" and unit.endswith("s"):
        unit = unit[:-1]  # 1 span, 1 call
    return f"{text} {unit}" if unit else text


def _sig(n: float, digits: int) -> str:
    if n == 0:
        return "0"
    text = f"{n:.{digits}g}"
    if "e" in text:
        return f"{n:.{digits}f}"
    # keep one decimal for small numbers: 1.0%, not 1%
    if "." not in text and abs(n) < 10 ** (digits - 1):
        text += ".0"
    return text


def describe_evidence(evidence: Mapping[str, Any]) -> str:
    """``error_rate 42% against a baseline of 1.0%``; empty when there is no evidence."""
    metric = evidence.get("metric")
    if not metric:
        return ""
    unit = str(evidence.get("unit", ""))
    text = (
        f"{metric} {format_value(evidence.get('observed'), unit)} against a baseline of "
        f"{format_value(evidence.get('baseline'), unit)}"
    )
    peak, share = evidence.get("peak"), evidence.get("share")
    if peak and peak != evidence.get("observed"):
        text += f", worst {format_value(peak, unit)}"
    if share:
        text += f", {format_value(share, 'ratio')} of spans affected"
    return text


def incident_link(page_url: str, incident_id: str) -> str:
    return f"{page_url.rstrip('/')}/?incident={quote(incident_id, safe='')}"


def trace_link(trace_url: str, trace_id: str) -> str:
    return trace_url.replace("{trace_id}", quote(trace_id, safe="")) if trace_url else ""


def _alert_name(pattern: str) -> str:
    return "Spanwatch" + "".join(part.capitalize() for part in pattern.split("_"))


def alert_labels(incident: Mapping[str, Any]) -> dict[str, str]:
    """The labels of an incident's alert; empty values are left out (Alertmanager's rule too)."""
    root = incident.get("root_cause") or {}
    labels = {
        "alertname": _alert_name(str(incident.get("pattern", "incident"))),
        "severity": f"SEV{int(incident.get('severity', 5))}",
        "pattern": str(incident.get("pattern", "")),
        "service": str(incident.get("service", "")),
        "operation": str(incident.get("operation", "")),
        "namespace": str(incident.get("namespace", "") or ""),
        "environment": str(incident.get("environment", "") or ""),
        "root_cause_service": str(root.get("service", "")),
        "root_cause_operation": str(root.get("operation", "")),
        "incident_id": str(incident.get("id", "")),
    }
    return {k: v for k, v in labels.items() if v}


def rfc3339(unix_s: float) -> str:
    return (
        datetime.fromtimestamp(unix_s, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _event_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        # Python's parser takes microseconds at most: drop the nanoseconds' last digits.
        head, _, frac = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}+00:00").timestamp()
    except ValueError:
        return None


# -- signing (the webhook) ---------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp.body`` with the shared secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a webhook receiver checks: a valid signature on a recent timestamp."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


# -- one destination ---------------------------------------------------------------------------


class _Sink:
    """A bounded queue of payloads (keyed: a newer payload replaces a waiting one) and a worker."""

    name = ""
    batch = 1

    def __init__(self, settings: Alerts, metrics: _Metrics, session: _Session) -> None:
        self._settings = settings
        self._metrics = metrics
        self._session = session
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failing = False
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    def offer(self, key: str, payload: dict[str, Any]) -> None:
        if key in self._pending:
            self._pending[key] = payload
            self._pending.move_to_end(key)
        else:
            if len(self._pending) >= self._settings.queue_size:
                self._pending.popitem(last=False)
                self._metrics.dropped.labels(self.name).inc()
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning(
                        "alert queue full, dropping the oldest",
                        sink=self.name,
                        dropped=self._dropped,
                    )
            self._pending[key] = payload
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"spanwatch-alerts-{self.name}")

    async def stop(self, flush_s: float) -> None:
        """Send what waits, for up to ``flush_s`` seconds, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), flush_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            items: list[dict[str, Any]] = []
            while self._pending and len(items) < self.batch:
                items.append(self._pending.popitem(last=False)[1])
            await self._deliver(items)

    async def _deliver(self, items: list[dict[str, Any]]) -> None:
        s = self._settings
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.attempts),
                wait=wait_exponential(multiplier=0.5, max=10.0) + wait_random(0, 0.5),
                retry=retry_if_exception_type(DeliveryFailed),
                reraise=False,
            ):
                with attempt:
                    await self._send(items)
        except (RetryError, DeliveryRefused) as exc:
            self._metrics.failed.labels(self.name).inc(len(items))
            cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
            if not self._failing:
                log.error(
                    "cannot deliver alerts",
                    sink=self.name,
                    alerts=len(items),
                    attempts=s.attempts if isinstance(exc, RetryError) else 1,
                    error=str(cause),
                )
            self._failing = True
            return
        if self._failing:
            log.info("delivering alerts again", sink=self.name)
        self._failing = False
        self._metrics.sent.labels(self.name).inc(len(items))

    async def _send(self, items: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            session = self._session.get()
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text(errors="replace"))[:200].strip()
                message = f"{url} answered {resp.status}: {text}"
                if resp.status in (408, 429) or resp.status >= 500:
                    raise DeliveryFailed(message)
                raise DeliveryRefused(message)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryFailed(f"{url}: {type(exc).__name__}: {exc}") from exc


class AlertmanagerSink(_Sink):
    name = "alertmanager"
    batch = MAX_BATCH

    async def _send(self, items: list[dict[str, Any]]) -> None:
        s = self._settings
        headers = {"Content-Type": "application/json"}
        if s.bearer_token or s.bearer_token_file:
            token = s.bearer_token
            if s.bearer_token_file is not None:
                token = s.bearer_token_file.read_text(encoding="utf-8").strip()
            headers["Authorization"] = f"Bearer {token}"
        elif s.basic_auth_user:
            auth = aiohttp.BasicAuth(s.basic_auth_user, s.basic_auth_password)
            headers["Authorization"] = auth.encode()
        url = s.alertmanager_url.rstrip("/") + ALERTS_PATH
        await self._post(url, json.dumps(items).encode(), headers)


class WebhookSink(_Sink):
    name = "webhook"

    async def _send(self, items: list[dict[str, Any]]) -> None:
        s = self._settings
        secret = s.webhook_secret
        if s.webhook_secret_file is not None:
            secret = s.webhook_secret_file.read_text(encoding="utf-8").strip()
        for item in items:
            body = json.dumps(item, ensure_ascii=False).encode()
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Spanwatch-Event": str(item.get("type", "")),
                "X-Spanwatch-Delivery": str(item.get("seq", "")),
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            }
            await self._post(s.webhook_url, body, headers)


# -- shared pieces -----------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "spanwatch_alerts_sent",
            "Alerts (or webhook calls) delivered, by destination.",
            ["sink"],
            registry=registry,
        )
        self.failed = Counter(
            "spanwatch_alerts_failed",
            "Alerts given up after every attempt, or refused, by destination.",
            ["sink"],
            registry=registry,
        )
        self.dropped = Counter(
            "spanwatch_alerts_dropped",
            "Alerts dropped from a full queue, by destination.",
            ["sink"],
            registry=registry,
        )


class _Session:
    """One aiohttp client session for both destinations, made on the loop when first used."""

    def __init__(self, settings: Alerts) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            s = self._settings
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=s.timeout),
                connector=aiohttp.TCPConnector(ssl=_client_ssl(s), limit=4),
                headers={"User-Agent": f"spanwatch/{__version__}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _client_ssl(s: Alerts) -> ssl.SSLContext | bool:
    if s.insecure_skip_verify:
        return False
    if s.ca_file is None and s.cert_file is None:
        return True
    context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
    if s.cert_file is not None and s.key_file is not None:
        context.load_cert_chain(str(s.cert_file), str(s.key_file))
    return context


@dataclass(slots=True)
class _Tracked:
    alert: dict[str, Any]
    resolved_at: float = 0.0  # wall clock when the resolution was learned; 0 while open


# -- the listener ------------------------------------------------------------------------------


def alerting_enabled(settings: Alerts) -> bool:
    return bool(settings.alertmanager_url or settings.webhook_url)


class Alerting:
    """A hub listener that turns incidents into alerts; start and stop it on the loop."""

    def __init__(
        self,
        settings: Alerts,
        registry: CollectorRegistry,
        page_url: str,
        trace_url: str = "",
    ) -> None:
        self._settings = settings
        self.page_url = page_url  # the daemon sets it once the page's port is known
        self._trace_url = trace_url
        self._metrics = _Metrics(registry)
        self._session = _Session(settings)
        self.alertmanager = (
            AlertmanagerSink(settings, self._metrics, self._session)
            if settings.alertmanager_url
            else None
        )
        self.webhook = (
            WebhookSink(settings, self._metrics, self._session) if settings.webhook_url else None
        )
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._resender: asyncio.Task[None] | None = None
        Gauge(
            "spanwatch_alerts_active", "Open incidents sent as alerts.", registry=registry
        ).set_function(lambda: sum(1 for t in self._tracked.values() if not t.resolved_at))

    @property
    def tracked(self) -> dict[str, dict[str, Any]]:
        """incident id -> its alert as last sent (open and recently resolved)."""
        return {k: v.alert for k, v in self._tracked.items()}

    def start(self) -> None:
        for sink in (self.alertmanager, self.webhook):
            if sink is not None:
                sink.start()
        if self.alertmanager is not None:
            self._resender = asyncio.create_task(self._resend_loop(), name="spanwatch-alerts")

    async def stop(self, flush_s: float = 5.0) -> None:
        """Send what waits (resolutions from the last drain included), then close."""
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
            self._resender = None
        await asyncio.gather(
            *(s.stop(flush_s) for s in (self.alertmanager, self.webhook) if s is not None)
        )
        await self._session.close()

    def seed(self, incidents: list[dict[str, Any]]) -> None:
        """Follow incidents that were open before a restart and are still open."""
        for incident in incidents:
            self._track(incident, resolved=False)

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if not kind.startswith("incident."):
            return
        incident = message["incident"]
        known = incident.get("id") in self._tracked
        if not known and int(incident.get("severity", 5)) > self._settings.min_severity:
            return
        resolved = kind == "incident.resolved" or incident.get("status") == "resolved"
        self._track(incident, resolved)
        if self.webhook is not None:
            self.webhook.offer(
                f"{incident.get('id')}:{message.get('seq')}",
                {
                    "type": kind,
                    "seq": message.get("seq"),
                    "time": message.get("time"),
                    "incident": incident,
                    "page_url": incident_link(self.page_url, str(incident.get("id", ""))),
                    "trace_urls": [
                        trace_link(self._trace_url, t) for t in incident.get("trace_ids", [])[:5]
                    ]
                    if self._trace_url
                    else [],
                },
            )

    def _track(self, incident: dict[str, Any], resolved: bool) -> None:
        incident_id = str(incident.get("id", ""))
        now = time.time()
        previous = self._tracked.get(incident_id)
        alert = self._alert(incident, now, resolved)
        if previous is not None and previous.alert["labels"] == alert["labels"]:
            alert["startsAt"] = previous.alert["startsAt"]  # an alert starts once
        if previous is not None and previous.alert["labels"] != alert["labels"]:
            # New labels make a new alert in Alertmanager (the severity changed): end the old
            # one now instead of leaving it to expire.
            old = {**previous.alert, "endsAt": rfc3339(now)}
            self._offer(old)
        tracked = _Tracked(alert, now if resolved else 0.0)
        if previous is not None and previous.resolved_at and resolved:
            tracked.resolved_at = previous.resolved_at
        self._tracked[incident_id] = tracked
        self._tracked.move_to_end(incident_id)
        while len(self._tracked) > MAX_TRACKED:
            oldest = next(
                (k for k, v in self._tracked.items() if v.resolved_at), next(iter(self._tracked))
            )
            del self._tracked[oldest]
        self._offer(alert)

    def _offer(self, alert: dict[str, Any]) -> None:
        if self.alertmanager is not None:
            key = json.dumps(sorted(alert["labels"].items()))
            self.alertmanager.offer(key, alert)

    def _alert(self, incident: dict[str, Any], now: float, resolved: bool) -> dict[str, Any]:
        s = self._settings
        started = _event_time(incident.get("started_at")) or now
        starts = min(started, now)  # event time may run ahead of this clock
        ends = now if resolved else now + s.resend_interval * s.resend_intervals
        link = incident_link(self.page_url, str(incident.get("id", "")))
        annotations = {
            "summary": str(incident.get("summary", ""))
            or f"{incident.get('pattern')} at {incident.get('service')}",
            "description": describe_evidence(incident.get("evidence") or {}),
            "page": link,
        }
        trace_ids = incident.get("trace_ids") or []
        if self._trace_url and trace_ids:
            annotations["trace"] = trace_link(self._trace_url, str(trace_ids[0]))
        return {
            "labels": alert_labels(incident),
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(max(ends, starts)),
            "generatorURL": link,
        }

    def resend(self) -> None:
        """Send every followed alert again: open ones with a later endsAt."""
        s = self._settings
        now = time.time()
        for incident_id, tracked in list(self._tracked.items()):
            if tracked.resolved_at:
                if now - tracked.resolved_at > s.resolved_retention:
                    del self._tracked[incident_id]
                    continue
            else:
                tracked.alert = {
                    **tracked.alert,
                    "endsAt": rfc3339(now + s.resend_interval * s.resend_intervals),
                }
            self._offer(tracked.alert)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resend_interval)
            self.resend()
