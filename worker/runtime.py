"""The worker process's runtime: every consumer in its own group on every stream, plus the
upkeep they share (heartbeat, stats, retention, metrics), started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.connections import REDIS_DOWN
from shared.keys import Keys
from shared.logs import error_text, get_logger
from shared.redis_values import now_ms
from shared.settings import Settings
from shared.tasks import cancel_and_wait

from .consumers import Consumer, SetupContext, resolve_options
from .dlq import DlqDepth
from .heartbeat import Heartbeat
from .metrics import ConsumerStats, MetricsServer, WorkerCollector
from .reader import GroupReader
from .retention import trim
from .retry import backoff_s
from .stats import Snapshot, take_snapshot

__all__ = ["Worker", "default_worker_id"]


def default_worker_id(pid: int | None = None) -> str:
    """The member name without RTT_WORKER_ID: unique per process, not stable over restarts;
    of this process, or of the child `pid` a supervisor started."""
    return f"{socket.gethostname()}-{pid or os.getpid()}"


class Worker:
    """Runs every consumer on every event stream until `stop()`.

    Raises ConsumerLoadError at once if a consumer's options do not fit the settings.
    """

    def __init__(self, settings: Settings, redis: Redis, consumers: Sequence[Consumer]) -> None:
        self.settings = settings
        self.redis = redis
        self.consumers = list(consumers)
        self.options = {item.name: resolve_options(item, settings) for item in self.consumers}
        self.keys = Keys(settings.key_prefix, settings.shards)
        self.worker_id = settings.worker_id or default_worker_id()
        self.log = get_logger()
        self.stats = {item.name: ConsumerStats() for item in self.consumers}
        self.capped: dict[str, int] = {}
        self._readers: list[GroupReader] = []
        self._stopping = asyncio.Event()
        self._force = False
        self._dlq_depth = DlqDepth(self.keys.dlq)
        self._last_totals = {name: stats.totals() for name, stats in self.stats.items()}

    def stop(self, *, force: bool = False) -> None:
        """Stop reading and let in-flight handlers finish; `force` skips the grace period."""
        self._force = self._force or force
        self._stopping.set()
        if force:
            for reader in self._readers:
                reader.stop(force=True)

    async def run(self) -> None:
        heartbeat = Heartbeat(
            self.redis,
            self.keys,
            [item.name for item in self.consumers],
            self.worker_id,
            interval_s=self.settings.heartbeat_interval.total_seconds(),
            ttl_s=self.settings.heartbeat_ttl.total_seconds(),
            log=self.log,
        )
        if not await self._acquire(heartbeat):
            return
        set_up: list[Consumer] = []
        metrics: MetricsServer | None = None
        try:
            for item in self.consumers:
                if item.setup is not None:
                    try:
                        await item.setup(self._setup_context(item))
                    except Exception as exc:
                        self.log.error(
                            "consumer_setup_failed", consumer=item.name, error=error_text(exc)
                        )
                        raise
                set_up.append(item)
            if self.settings.worker_metrics_port:
                metrics = self._metrics_server()
                await metrics.start()
            await self._run_readers(heartbeat)
        finally:
            if metrics is not None:
                await metrics.stop()
            # Best effort, and brief: if Redis is down, the keys expire on their own.
            with contextlib.suppress(*REDIS_DOWN, ResponseError):
                async with asyncio.timeout(2.0):
                    await heartbeat.clear()
            for item in reversed(set_up):
                if item.teardown is not None:
                    try:
                        await item.teardown()
                    except Exception as exc:
                        self.log.error(
                            "consumer_teardown_failed", consumer=item.name, error=error_text(exc)
                        )

    def _setup_context(self, item: Consumer) -> SetupContext:
        return SetupContext(
            redis=self.redis,
            keys=self.keys,
            key_prefix=self.keys.prefix,
            consumer=item.name,
            worker_id=self.worker_id,
            options=self.options[item.name],
            log=self.log.bind(consumer=item.name, worker_id=self.worker_id),
        )

    async def _acquire(self, heartbeat: Heartbeat) -> bool:
        """Take the worker id, waiting for Redis if it is down; False if stopped first."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await heartbeat.acquire(timeout_s=2 * self.settings.heartbeat_ttl.total_seconds())
                return True
            except REDIS_DOWN as exc:
                failures += 1
                delay_s = backoff_s(failures, 0.1, 5.0)
                self.log.warning(
                    "redis_unavailable",
                    operation="start",
                    error=error_text(exc),
                    attempt=failures,
                    retry_in_s=round(delay_s, 3),
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await self._stopping.wait()
        return False

    async def _run_readers(self, heartbeat: Heartbeat) -> None:
        self._readers = [
            GroupReader(
                item,
                options=self.options[item.name],
                redis=self.redis,
                settings=self.settings,
                keys=self.keys,
                worker_id=self.worker_id,
                stats=self.stats[item.name],
            )
            for item in self.consumers
        ]
        upkeep = [
            asyncio.create_task(heartbeat.run(), name="heartbeat"),
            asyncio.create_task(self._upkeep_loop(), name="upkeep"),
        ]
        readers = [asyncio.create_task(r.run(), name=f"consumer-{r.group}") for r in self._readers]
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                [stop_wait, *readers, *upkeep], return_when=asyncio.FIRST_COMPLETED
            )
            if stop_wait not in done:
                self.log.error("worker_task_ended", tasks=[t.get_name() for t in done])
        finally:
            stop_wait.cancel()
            for reader in self._readers:
                reader.stop(force=self._force)
            results = await asyncio.gather(*readers, return_exceptions=True)
            await cancel_and_wait(upkeep)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    # --- upkeep: stats line, retention --------------------------------------------------

    async def snapshot(self) -> Snapshot:
        return await take_snapshot(self.redis, self.keys, self._dlq_depth)

    async def _upkeep_loop(self) -> None:
        interval_s = self.settings.stats_interval.total_seconds()
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._trim_streams()
                snap = await self.snapshot()
            except (*REDIS_DOWN, ResponseError) as exc:
                self.log.warning("upkeep_failed", error=error_text(exc))
                continue
            self._log_stats(snap, interval_s)

    async def _trim_streams(self) -> None:
        retention_ms = int(self.settings.stream_retention.total_seconds() * 1000)
        for stream in self.keys.event_streams():
            result = await trim(
                self.redis,
                stream,
                now_ms=now_ms(),
                retention_ms=retention_ms,
                max_len=self.settings.stream_max_len,
            )
            if result.trimmed:
                self.log.info("stream_trimmed", stream=stream, entries=result.trimmed)
            if result.capped:
                self.capped[stream] = self.capped.get(stream, 0) + result.capped
                self.log.error(
                    "stream_capped",
                    stream=stream,
                    dropped=result.capped,
                    max_len=self.settings.stream_max_len,
                )

    def _log_stats(self, snap: Snapshot, interval_s: float) -> None:
        for name, stats in self.stats.items():
            totals = stats.totals()
            last = self._last_totals[name]
            self._last_totals[name] = totals
            lag, pending = snap.group_totals(name)
            self.log.info(
                "worker_stats",
                consumer=name,
                interval_s=interval_s,
                **{key: totals[key] - last[key] for key in totals},
                lag=lag,
                pending=pending,
                dlq=snap.dlq_by_group.get(name, 0),
            )

    def _metrics_server(self) -> MetricsServer:
        collector = WorkerCollector(self.stats, self.capped)
        return MetricsServer(
            collector,
            self.snapshot,
            host=self.settings.worker_metrics_listen_host,
            port=self.settings.worker_metrics_port,
            refresh_timeout_s=self.settings.redis_timeout.total_seconds(),
            log=self.log,
        )
