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

from spanwatch.detect import Detector, Settings
from spanwatch.model import Event, SpanBatch

log = structlog.get_logger("spanwatch.detect")

SNAPSHOT_NAME = "detector.pickle"
# Bumped when the detector's pickled state changes shape; an old snapshot is then ignored.
SNAPSHOT_VERSION = 3


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
        self.detector = self._restore(settings) or Detector(settings)
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
                "spanwatch_detector_open_incidents",
                "Incidents open now.",
                lambda: len(self.detector.open_incidents),
            ),
        ):
            Gauge(name, doc, registry=registry).set_function(read)

    def __call__(self, batch: SpanBatch) -> None:
        self._last_arrival_ns = time.time_ns()
        self._emit(self.detector.process(batch, self._emit))
        self._last_watermark = self.detector.watermark_ns

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
