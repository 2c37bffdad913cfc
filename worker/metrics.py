"""Worker metrics: counters kept per consumer in the hot path, exposed by prometheus-client.

Handlers are counted and timed with plain integers and a bucket array, and turned into
Prometheus families only when scraped: a prometheus-client `Histogram.observe` takes a
lock and costs more than a whole no-op handler, which the throughput goal cannot afford.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from structlog.typing import FilteringBoundLogger

from shared.logs import error_text

from .stats import Snapshot

__all__ = ["Buckets", "ConsumerStats", "MetricsServer", "WorkerCollector"]

LATENCY_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DELIVERY_BOUNDS = (1, 2, 3, 4, 5, 10, 20)


class Buckets:
    """A histogram as prometheus-client exposes it: cumulative counts, a sum, a count."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        result: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append((_le(bound), running))
        return result


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


@dataclass(slots=True)
class ConsumerStats:
    """What one consumer did in this process since it started."""

    processed: int = 0  # handled and acknowledged
    failed: int = 0  # handler raised
    retried: int = 0  # failures scheduled for another delivery
    dead_lettered: int = 0
    skipped: int = 0  # acknowledged unhandled: other event types, replays for another group
    latency_s: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS_S))
    # Only entries settled after more than one delivery: first deliveries, by far the
    # most, are counted from `processed` and `dead_lettered` at scrape time instead.
    redeliveries: Buckets = field(default_factory=lambda: Buckets(DELIVERY_BOUNDS))

    def deliveries(self) -> Buckets:
        """Delivery count of every settled entry."""
        result = Buckets(DELIVERY_BOUNDS)
        result.counts = list(self.redeliveries.counts)
        first = self.processed + self.dead_lettered - sum(self.redeliveries.counts)
        result.counts[0] += first
        result.total = self.redeliveries.total + first
        return result

    def totals(self) -> dict[str, int]:
        return {
            "processed": self.processed,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "skipped": self.skipped,
        }


class WorkerCollector(Collector):
    """Turns the consumers' counters and the latest snapshot into Prometheus families."""

    def __init__(self, stats: dict[str, ConsumerStats], capped: dict[str, int]) -> None:
        self.stats = stats
        self.capped = capped
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        entries = CounterMetricFamily(
            "rtt_worker_entries",
            "Entries settled by a consumer, by outcome",
            labels=["consumer", "outcome"],
        )
        retries = CounterMetricFamily(
            "rtt_worker_retries", "Handler failures scheduled for a retry", labels=["consumer"]
        )
        latency = HistogramMetricFamily(
            "rtt_worker_handler_seconds", "Handler run time", labels=["consumer"]
        )
        deliveries = HistogramMetricFamily(
            "rtt_worker_deliveries",
            "Delivery count of an entry when it was handled",
            labels=["consumer"],
        )
        for name, item in self.stats.items():
            for outcome in ("processed", "failed", "dead_lettered", "skipped"):
                entries.add_metric([name, outcome], getattr(item, outcome))
            retries.add_metric([name], item.retried)
            latency.add_metric([name], item.latency_s.cumulative(), item.latency_s.total)
            settled = item.deliveries()
            deliveries.add_metric([name], settled.cumulative(), settled.total)
        yield from (entries, retries, latency, deliveries)
        capped = CounterMetricFamily(
            "rtt_stream_capped_entries",
            "Entries dropped by the emergency length cap before every group acknowledged them",
            labels=["stream"],
        )
        for stream, count in self.capped.items():
            capped.add_metric([stream], count)
        yield capped
        if self.snapshot is not None:
            yield from self._from_snapshot(self.snapshot)

    @staticmethod
    def _from_snapshot(snap: Snapshot) -> Iterator[Metric]:
        length = GaugeMetricFamily("rtt_stream_length", "Entries in the stream", labels=["stream"])
        lag = GaugeMetricFamily(
            "rtt_group_lag", "Entries not yet delivered to the group", labels=["stream", "group"]
        )
        pending = GaugeMetricFamily(
            "rtt_group_pending", "Delivered, not yet acknowledged", labels=["stream", "group"]
        )
        oldest = GaugeMetricFamily(
            "rtt_group_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged entry",
            labels=["stream", "group"],
        )
        dlq = GaugeMetricFamily("rtt_dlq_depth", "Dead letters waiting", labels=["group"])
        for stream in snap.streams:
            length.add_metric([stream.stream], stream.length)
            for group in stream.groups:
                labels = [stream.stream, group.name]
                if group.lag is not None:
                    lag.add_metric(labels, group.lag)
                pending.add_metric(labels, group.pending)
                oldest.add_metric(labels, group.oldest_pending_age_s or 0.0)
        for group_name, count in snap.dlq_by_group.items():
            dlq.add_metric([group_name], count)
        yield from (length, lag, pending, oldest, dlq)


class MetricsServer:
    """`/metrics` on its own port; the Redis-backed gauges are refreshed at each scrape."""

    def __init__(
        self,
        collector: WorkerCollector,
        refresh: Callable[[], Awaitable[Snapshot]],
        *,
        host: str,
        port: int,
        refresh_timeout_s: float,
        log: FilteringBoundLogger,
    ) -> None:
        self.log = log
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._collector = collector
        self._refresh = refresh
        self._timeout_s = refresh_timeout_s
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self._timeout_s):
                self._collector.snapshot = await self._refresh()
        except Exception as exc:
            # Counters are still worth serving; the gauges keep their last values.
            self.log.warning("metrics_refresh_failed", error=error_text(exc))
        # Consumers (the built-in alerts, user plugins) register their own metrics the usual
        # way, in prometheus-client's default registry: served here next to the runtime's.
        body = generate_latest(self.registry) + generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(
                f"RTT_WORKER_METRICS_PORT {self._port} on {self._host}: {exc.strerror}; give "
                "each worker on one host its own port, or 0 to turn /metrics off"
            ) from exc
        self.log.info("worker_metrics_listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
