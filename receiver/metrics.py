"""The receiver's Prometheus metrics, in a registry of their own per app.

With `--processes N` the processes share one port, so a scrape reaches any one of them;
they then keep their values in prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor) and every scrape sums them all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["ReceiverMetrics"]

# Store latency: a shared round trip is well under a millisecond on loopback; the spool's
# fsync takes milliseconds; the deadline (default 2 s) bounds the rest.
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rtt_receiver_requests",
            "Requests to the events path, by outcome and event type",
            ["outcome", "event_type"],
            registry=self.registry,
        )
        self.decode_errors = Counter(
            "rtt_receiver_decode_errors",
            "Bodies answered 400: not JSON, or not a valid event",
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "rtt_receiver_store_seconds",
            "Time to store one item (Redis, or the spool), by outcome",
            ["outcome"],
            buckets=_STORE_BUCKETS,
            registry=self.registry,
        )
        self.dedup_hits = Counter(
            "rtt_receiver_dedup_hits",
            "Repeated deliveries answered 204 and not stored again",
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "rtt_receiver_spool_depth",
            "Items in the local spool not yet drained into Redis",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.spool_oldest_age = Gauge(
            "rtt_receiver_spool_oldest_age_seconds",
            "Age of the oldest item in the local spool (0 when empty)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.spool_drained = Counter(
            "rtt_receiver_spool_drained",
            "Spooled items moved into Redis (repeats included)",
            registry=self.registry,
        )

        self.open_to_anyone = Gauge(
            "rtt_receiver_open_to_anyone",
            "1 when listening beyond loopback with neither RTT_BASIC_AUTH nor RTT_ALLOW_CIDRS",
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def render(self) -> tuple[bytes, str]:
        """The text exposition, summed over all processes in multiprocess mode."""
        multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
