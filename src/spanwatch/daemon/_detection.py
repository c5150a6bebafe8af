"""The detection stage: the pure detector wrapped with its clock, snapshots and metrics.

Runs on the pipeline's worker thread (the detector is not thread-safe; nothing else touches
it). Event time comes from spans; the wall clock only moves the watermark on while no spans
arrive, so quiet services still get their windows closed. The detector's state is pickled to
the data directory now and then and at shutdown (all but the last minute's traces), and
restored at start, so a restart does not relearn every baseline.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from spanwatch.detect import Detector, Settings
from spanwatch.model import Event, SpanBatch, source_parts
from spanwatch.otlp import set_identity

log = structlog.get_logger("spanwatch.detect")

SNAPSHOT_NAME = "detector.pickle"
# Bumped when the detector's pickled state changes shape; an old snapshot is then ignored.
SNAPSHOT_VERSION = 13
# A source's clock trouble is logged at most this often (wall clock seconds).
NOTE_INTERVAL_S = 60.0


class DetectionStage:
    def __init__(
        self,
        settings: Settings,
        publish: Callable[[Event], None],
        data_dir: Path,
        registry: CollectorRegistry,
        snapshot_interval: float = 60.0,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._publish = publish
        self._redact = redact
        self._path = data_dir / SNAPSHOT_NAME
        self._interval = snapshot_interval
        set_identity(settings.identity)
        self.detector = self._restore(settings) or Detector(settings)
        self._noted: dict[tuple[str, str], float] = {}  # (source, kind) -> when last logged
        self._last_arrival_ns = 0  # wall clock of the last batch
        self._last_watermark = self.detector.watermark_ns  # event time after that batch
        self._last_snapshot = time.monotonic()
        self._idle_after_ns = int(settings.lateness_s * 1e9)
        for name, doc, read in (
            (
                "spanwatch_detector_keys",
                "Tracked (service, operation, kind) keys.",
                lambda: self.detector.tracked_keys,
            ),
            (
                "spanwatch_detector_evicted_keys",
                "Keys dropped past detector.max_keys (LRU).",
                lambda: self.detector.dropped_keys,
            ),
            (
                "spanwatch_detector_late_spans",
                "Spans that arrived after their window closed.",
                lambda: self.detector.late_spans,
            ),
            (
                "spanwatch_detector_probe_spans",
                "Health checks and requests no route matched, left out of the baselines.",
                lambda: self.detector.probe_spans,
            ),
            (
                "spanwatch_detector_open_incidents",
                "Incidents open now.",
                lambda: len(self.detector.open_incidents),
            ),
        ):
            Gauge(name, doc, registry=registry).set_function(read)
        registry.register(_ClockMetrics(self))

    def __call__(self, batch: SpanBatch) -> None:
        self._last_arrival_ns = time.time_ns()
        self._emit(self.detector.process(batch, self._emit))
        self._last_watermark = self.detector.watermark_ns
        self._log_notes()

    def _log_notes(self) -> None:
        """What the event clock noted: each source's trouble at most once a minute."""
        notes = self.detector.drain_notes()
        if not notes:
            return
        now = time.monotonic()
        if len(self._noted) > 10_000:
            self._noted = {k: t for k, t in self._noted.items() if now - t < NOTE_INTERVAL_S}
        for note in notes:
            if note.kind == "epoch":
                kept = "baselines kept" if note.source == "forward" else "judged afresh"
                log.warning(
                    f"traffic far from the detector's event time: a new epoch starts "
                    f"({note.source}: open incidents resolved, {kept})",
                    spans=note.spans,
                    jump_s=round(note.skew_ns / 1e9, 1),
                )
                continue
            last = self._noted.get((note.source, note.kind))
            if last is not None and now - last < NOTE_INTERVAL_S:
                continue
            self._noted[(note.source, note.kind)] = now
            _, scope, instance = source_parts(note.source)
            where = {
                "service": note.service,
                "scope": scope.replace("\x1f", "/") or None,
                "instance": instance or None,
            }
            if note.kind == "late":
                log.warning(
                    "spans arrived after their window closed and were not judged",
                    **where,
                    spans=note.spans,
                    behind_s=round(-note.skew_ns / 1e9, 1),
                )
            else:
                log.warning(
                    "a source's clock is off the fleet's: its spans are judged on a corrected time",
                    **where,
                    spans=note.spans,
                    skew_s=round(note.skew_ns / 1e9, 1),
                    kind=note.kind,
                )

    def status(self) -> dict[str, Any]:
        """What the page's header and ``GET /api/status`` show of detection."""
        d = self.detector
        clock = d.clock
        return {
            "keys": d.tracked_keys,
            "open_incidents": len(d.open_incidents),
            "late_spans": d.late_spans,
            "corrected_spans": sum(clock.corrected.values()),
            "held_spans": clock.held_spans,
            "lagging_sources": len(clock.lagging),
            "max_lag_s": max(clock.lagging.values(), default=0) / 1e9,
            "epochs": clock.epochs,
            "event_time": d.watermark_ns,
        }

    def tick(self, now_ns: int) -> None:
        """Called on the worker thread about once a second, with the wall clock."""
        idle = now_ns - self._last_arrival_ns
        if self._last_arrival_ns and idle >= self._idle_after_ns:
            # No spans lately: let event time follow the wall clock from the last span seen.
            self._emit(self.detector.advance(self._last_watermark + idle))
        if time.monotonic() - self._last_snapshot >= self._interval:
            self.snapshot()

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            if self._redact is not None and "incident" in event.fields:
                # Span text is redacted here, once, before any subscriber, the store, the OTel
                # events or a log line can see it.
                event = Event(
                    event.type, {**event.fields, "incident": self._redact(event.fields["incident"])}
                )
            self._publish(event)

    def snapshot(self) -> None:
        """Write the detector's state atomically (a crash mid-write leaves the old one)."""
        self._last_snapshot = time.monotonic()
        tmp = self._path.with_suffix(".tmp")
        try:
            with tmp.open("wb") as fh:
                # Without the recent traces: pickling them would stall detection for a second
                # or more on a busy daemon, for context that refills within a minute.
                state = self.detector.without_traces()
                pickle.dump((SNAPSHOT_VERSION, state), fh, pickle.HIGHEST_PROTOCOL)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            log.error("cannot write the detector snapshot", path=str(self._path), error=str(exc))

    def _restore(self, settings: Settings) -> Detector | None:
        if not self._path.exists():
            return None
        try:
            with self._path.open("rb") as fh:
                version, detector = pickle.load(fh)
        except Exception as exc:  # a damaged snapshot must not keep the daemon down
            log.warning(
                "ignoring an unreadable detector snapshot", path=str(self._path), error=str(exc)
            )
            return None
        if version != SNAPSHOT_VERSION or not isinstance(detector, Detector):
            log.warning("ignoring a detector snapshot of another version", path=str(self._path))
            return None
        if detector.settings != settings:
            log.info("detector settings changed; starting from fresh baselines")
            return None
        log.info(
            "detector restored",
            keys=detector.tracked_keys,
            open_incidents=len(detector.open_incidents),
        )
        return detector


class _ClockMetrics(Collector):
    """Late and corrected spans by service, each lagging source's lag, epochs: read from the
    detector at scrape time (it keeps plain counters; no Prometheus object per service)."""

    def __init__(self, stage: DetectionStage) -> None:
        self._stage = stage

    def collect(self) -> Any:
        d = self._stage.detector
        late = CounterMetricFamily(
            "spanwatch_detector_late_spans_by_service",
            "Spans that arrived after their window closed (beyond detector.max_lag), by service.",
            labels=["service"],
        )
        for service, n in sorted(d.late.items()):
            late.add_metric([service], n)
        yield late
        corrected = CounterMetricFamily(
            "spanwatch_detector_corrected_spans",
            "Spans judged on a corrected time: their clock was off the fleet's (direction: ahead "
            "or behind).",
            labels=["service", "direction"],
        )
        for (service, direction), n in sorted(d.clock.corrected.items()):
            corrected.add_metric([service, direction], n)
        yield corrected
        lag = GaugeMetricFamily(
            "spanwatch_detector_source_lag_seconds",
            "How far behind the fleet's event time each lagging source is (waited for).",
            labels=["service", "instance"],
        )
        for source, behind_ns in sorted(d.clock.lagging.items()):
            service, _, instance = source_parts(source)
            lag.add_metric([service, instance], behind_ns / 1e9)
        yield lag
        epochs = CounterMetricFamily(
            "spanwatch_detector_epochs",
            "Times event time started over (traffic far older or newer than the fleet's).",
        )
        epochs.add_metric([], d.clock.epochs)
        yield epochs
        held = GaugeMetricFamily(
            "spanwatch_detector_held_spans",
            "Spans held back while it is told whether event time has started over.",
        )
        held.add_metric([], d.clock.held_spans)
        yield held
