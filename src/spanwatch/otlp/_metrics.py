"""Receiver counters, in a registry the daemon owns (one per daemon, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted_spans = Counter(
            "spanwatch_receiver_accepted_spans",
            "Spans decoded and handed to the detector.",
            ["transport"],
            registry=registry,
        )
        self.refused_spans = Counter(
            "spanwatch_receiver_refused_spans",
            "Spans refused: invalid ids or times (partial success), or the queue was full.",
            ["transport"],
            registry=registry,
        )
        self.requests = Counter(
            "spanwatch_receiver_requests",
            "Export requests by outcome.",
            ["transport", "outcome"],
            registry=registry,
        )
        self.received_bytes = Counter(
            "spanwatch_receiver_received_bytes",
            "Request body bytes as received (HTTP: before decompression; gRPC: the message).",
            ["transport"],
            registry=registry,
        )
        # Publish every transport's series from the start, at 0, so dashboards and alerts see them.
        for transport in ("grpc", "http"):
            for counter in (self.accepted_spans, self.refused_spans, self.received_bytes):
                counter.labels(transport)
