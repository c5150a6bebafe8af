"""Wiring and lifecycle: start order, health, metrics, graceful shutdown.

Start: data dir → detector (restored from its snapshot) → pipeline → gRPC → HTTP → WebSocket,
then READY=1. Stop: STOPPING=1 → not ready → refuse new requests and finish in-flight ones →
drain the pipeline (its last events still reach subscribers) → snapshot the detector → close
WebSockets → flush OTel events → exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from spanwatch import __version__
from spanwatch.analyze import AnalysisStage, Redactor
from spanwatch.config import BearerToken, Config, ListenAddress, ssl_context
from spanwatch.detect import Settings as DetectorSettings
from spanwatch.model import StorageUnavailable, rfc3339_ns
from spanwatch.otlp import (
    GrpcReceiver,
    HttpReceiver,
    Ingest,
    MemoryGuard,
    ReceiverMetrics,
    auth_middleware,
    release_free_memory,
)
from spanwatch.publish import (
    Alerting,
    Hub,
    OtelEvents,
    RatingDesk,
    WebSocketServer,
    alerting_enabled,
    events_enabled,
)
from spanwatch.store import Store

from . import _systemd
from ._detection import DetectionStage
from ._pipeline import Pipeline, Stage
from ._rest import RestApi

log = structlog.get_logger("spanwatch.daemon")

HEALTH_PATHS = ("/healthz", "/readyz")


class Daemon:
    """One spanwatch daemon. ``stages`` run on every accepted batch, in order."""

    def __init__(self, config: Config, stages: list[Stage] | None = None) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.token = BearerToken(config.auth)
        redactor = Redactor(ip_addresses=config.analysis.redact_ip_addresses)
        pub = config.publish
        self.hub = Hub(self.registry, pub.replay_ring, pub.subscriber_queue)
        det = config.detector
        self.detection = DetectionStage(
            DetectorSettings(
                window_s=det.window,
                lateness_s=det.lateness,
                warmup_windows=det.warmup_windows,
                quiet_windows=det.quiet_windows,
                max_keys=det.max_keys,
                max_traces=det.max_traces,
                max_lag_s=det.max_lag,
                max_ahead_s=det.max_ahead,
                identity=tuple(det.identity),
                probe_paths=tuple(det.probe_paths),
            ),
            self.hub.publish,
            config.storage.data_dir,
            self.registry,
            det.snapshot_interval,
            redact=redactor.redact_mapping,
        )
        self.pipeline = Pipeline(
            config.receiver.queue_spans,
            [self.detection, *(stages or [])],
            self.registry,
            # the batches' columns, freed between long-lived blocks, would otherwise stay
            # resident (about 10 MiB of 290 at 100,000 keys, and spikes above that)
            housekeeping=release_free_memory,
        )
        metrics = ReceiverMetrics(self.registry)
        self.memory = MemoryGuard(config.receiver.memory_limit)
        Gauge(
            "spanwatch_process_resident_bytes",
            "Resident memory, as the memory limit last read it.",
            registry=self.registry,
        ).set_function(lambda: self.memory.rss)
        self.ingest = Ingest(
            self.pipeline.offer,
            metrics,
            config.receiver.retry_after,
            self.memory,
            room=self.pipeline.has_room,
        )
        self.store = Store(
            config.storage.data_dir / "spanwatch.db",
            redact=redactor.redact,
            busy_timeout=config.storage.busy_timeout,
        )
        Gauge(
            "spanwatch_store_dropped_events",
            "Incident and analysis records the database could not take (full, read-only, busy).",
            registry=self.registry,
        ).set_function(lambda: self.store.dropped_events)
        self.hub.add_listener(self.store)
        self.ratings = RatingDesk(self.hub, self.store.record_rating, self.store.stats)
        self._rest = RestApi(self.store, self.ratings, self.status)
        self.ws = WebSocketServer(
            self.hub,
            self.token,
            pub.ws_listen,
            self.ratings.rate,
            pub.allowed_origins,
            pub.ping_interval,
            ssl_context(config.tls),
            endpoints=self._rest.page_endpoints(),
            trace_url=pub.trace_url,
        )
        self.alerts: Alerting | None = None
        if alerting_enabled(config.alerts):
            self.alerts = Alerting(config.alerts, self.registry, pub.page_url, pub.trace_url)
            self.hub.add_listener(self.alerts)
        # (monotonic time, accepted spans) about once a second: the ingest rate of /api/status
        self._ingest_samples: deque[tuple[float, float]] = deque(maxlen=11)
        self._sampler: asyncio.Task[None] | None = None
        self.analysis = AnalysisStage(
            config, self.hub.publish, self.registry, similar=self.store.similar
        )
        self.hub.add_listener(self.analysis)
        self.events: OtelEvents | None = None
        if events_enabled(config.events):
            self.events = OtelEvents(config.events)
            self.hub.add_listener(self.events)
        self.grpc = GrpcReceiver(
            self.ingest,
            self.token,
            config.receiver.grpc_listen,
            config.receiver.max_request_size,
            config.tls,
        )
        self._http_receiver = HttpReceiver(self.ingest, config.receiver.max_request_size)
        self._runner: web.AppRunner | None = None
        self.http_port = 0
        self.ready = False
        self._started_at = time.monotonic()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        cfg = self.config
        cfg.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.hub.attach(asyncio.get_running_loop())
        await asyncio.to_thread(self._close_orphans)
        self.pipeline.start()
        await self.grpc.start()
        await self._start_http(cfg.receiver.http_listen)
        try:
            await self.ws.start()
        except OSError as exc:
            raise OSError(
                f"cannot listen for WebSocket on {cfg.publish.ws_listen} ({_why(exc)}): choose "
                "another with --ws-listen"
            ) from exc
        self.analysis.start()
        if self.alerts is not None:
            if not cfg.publish.page_url:
                scheme = "https" if cfg.tls.enabled else "http"
                self.alerts.page_url = (
                    f"{scheme}://{_url_host(cfg.publish.ws_listen.host)}:{self.ws.port}/"
                )
            self.alerts.seed(await asyncio.to_thread(self._still_open))
            self.alerts.start()
        self._sampler = asyncio.create_task(self._sample_ingest(), name="spanwatch-ingest-rate")
        self.ready = True
        log.info(
            "listening",
            grpc=f"{cfg.receiver.grpc_listen.host}:{self.grpc_port}",
            http=f"{cfg.receiver.http_listen.host}:{self.http_port}",
            ws=f"{cfg.publish.ws_listen.host}:{self.ws.port}",
            otel_events=self.events is not None,
            llm=f"{cfg.llm.model} at {cfg.llm.host}" if cfg.analysis.enabled else "off",
            alertmanager=cfg.alerts.alertmanager_url or "off",
            data_dir=str(cfg.storage.data_dir),
            auth=self.token.enabled,
        )

    async def _start_http(self, address: ListenAddress) -> None:
        app = web.Application(
            middlewares=[auth_middleware(self.token, self.ingest, HEALTH_PATHS)],
        )
        app.add_routes(self._http_receiver.routes())
        app.add_routes(self._rest.routes())
        app.add_routes(
            [
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
            ]
        )
        # Bodies are decompressed by the receiver, bounded; aiohttp must hand them over as sent.
        runner = web.AppRunner(
            app,
            auto_decompress=False,
            access_log=None,
            shutdown_timeout=self.config.receiver.shutdown_grace,
        )
        await runner.setup()
        site = web.TCPSite(
            runner,
            address.host,
            address.port,
            reuse_address=True,
            ssl_context=ssl_context(self.config.tls),
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                f"cannot listen for OTLP/HTTP on {address} ({_why(exc)}): choose another with "
                "--http-listen"
            ) from exc
        self._runner = runner
        sockets: Any = runner.addresses
        self.http_port = int(sockets[0][1])

    async def stop(self) -> None:
        """Stop taking spans, finish what was accepted, and release the ports."""
        _systemd.stopping()
        self.ready = False
        grace = self.config.receiver.shutdown_grace
        log.info("stopping", queued_spans=self.pipeline.queued_spans)
        await asyncio.gather(self.grpc.stop(grace), self._stop_http())
        await self.pipeline.drain()
        self.detection.snapshot()  # the worker has stopped: nothing else touches the detector
        await self.analysis.stop()
        await asyncio.sleep(0)  # events published from the worker thread reach the listeners
        if self.alerts is not None:
            await self.alerts.stop()  # the last resolutions go out, within a bound
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await asyncio.to_thread(self.store.close)  # everything published is written first
        await asyncio.sleep(0)  # let events published from the worker thread reach the hub
        await self.ws.stop()
        if self.events is not None:
            await asyncio.to_thread(self.events.shutdown)
        log.info(
            "stopped",
            accepted_spans=int(
                sum(
                    self.registry.get_sample_value(
                        "spanwatch_receiver_accepted_spans_total", {"transport": t}
                    )
                    or 0
                    for t in ("grpc", "http")
                )
            ),
            processed_spans=self.pipeline.processed_spans,
            watermark_ns=self.pipeline.watermark_ns,
        )

    async def _stop_http(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reload(self, config: Config) -> None:
        """SIGHUP: take a new token and log level; listeners stay as they are."""
        self.token.reload(config.auth)
        self.config = config
        log.info("reloaded", auth=self.token.enabled)

    def _still_open(self) -> list[dict[str, Any]]:
        """Incidents open in the store that the (restored) detector still holds open."""
        held = {i.id for i in self.detection.detector.open_incidents}
        if not held:
            return []
        found, _ = self.store.incidents(limit=500, status="open")
        return [i for i in found if i.get("id") in held]

    def _close_orphans(self) -> None:
        # Before the worker starts: nothing else reads the detector yet.
        held = {i.id for i in self.detection.detector.open_incidents}
        try:
            closed = self.store.close_orphans(
                held, "closed at start: the detector that held it open was not restored"
            )
        except StorageUnavailable as exc:
            log.error("cannot close orphaned incidents", error=str(exc))
            return
        if closed:
            log.info("closed incidents no detector holds open any more", incidents=closed)

    def _accepted_spans(self) -> float:
        return sum(
            self.registry.get_sample_value(
                "spanwatch_receiver_accepted_spans_total", {"transport": t}
            )
            or 0.0
            for t in ("grpc", "http")
        )

    async def _sample_ingest(self) -> None:
        while True:
            self._ingest_samples.append((time.monotonic(), self._accepted_spans()))
            await asyncio.sleep(1.0)

    def status(self) -> dict[str, Any]:
        """What the page's header shows: ingest, the detector's counters, alert delivery."""
        samples = list(self._ingest_samples)
        rate = 0.0
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
        refused = sum(
            s.value
            for metric in self.registry.collect()
            if metric.name == "spanwatch_receiver_refused_spans"
            for s in metric.samples
            if s.name.endswith("_total")
        )
        detector: dict[str, Any] | None = None
        read = getattr(self.detection, "status", None)
        if callable(read):
            try:
                detector = dict(read())
            except Exception:  # the header must not break on the detector's account
                log.exception("detector status failed")
        if detector is None:
            det = self.detection.detector
            detector = {
                "keys": det.tracked_keys,
                "late_spans": det.late_spans,
                "open_incidents": len(det.open_incidents),
            }
        return {
            "version": __version__,
            # the hub's last seq: a page that reads the store now subscribes with ?since=seq
            "seq": self.hub.seq,
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "ready": self.ready,
            "ingest": {
                "accepted_spans": int(self._accepted_spans()),
                "refused_spans": int(refused),
                "spans_per_s": round(rate, 1),
                "queued_spans": self.pipeline.queued_spans,
                "watermark": _rfc3339_or_none(self.pipeline.watermark_ns),
            },
            "detector": detector,
            # traffic an operation needs before it can alert (detector.warmup_windows windows)
            "warmup_s": self.config.detector.window * self.config.detector.warmup_windows,
            "alerts": {
                "alertmanager": bool(self.config.alerts.alertmanager_url),
                "webhook": bool(self.config.alerts.webhook_url),
            },
            "listen": {
                "grpc": f"{self.config.receiver.grpc_listen.host}:{self.grpc_port}",
                "http": f"{self.config.receiver.http_listen.host}:{self.http_port}",
            },
            "subscribers": self.hub.subscriber_count,
            "analysis": self.config.analysis.enabled,
        }

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "uptime_s": round(time.monotonic() - self._started_at, 3)}
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "not ready"}, status=503)
        return web.json_response({"status": "ready", "queued_spans": self.pipeline.queued_spans})


def _why(exc: OSError) -> str:
    """``address already in use`` rather than the library's whole sentence."""
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _rfc3339_or_none(ns: int) -> str | None:
    return rfc3339_ns(ns) if ns else None
