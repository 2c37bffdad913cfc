"""Helpers for the worker tests: run a worker in this process, read its groups from Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared.settings import Settings
from worker.consumers import Consumer
from worker.runtime import Worker

__all__ = [
    "RECORDER",
    "group_info",
    "pending_ids",
    "running",
    "running_many",
    "worker_env",
]


async def group_info(redis: Redis, stream: str, group: str) -> dict[str, Any]:
    groups: Any = await redis.xinfo_groups(stream)
    for item in groups:
        if item["name"] == group.encode():
            return dict(item)
    return {}


async def pending_ids(redis: Redis, stream: str, group: str) -> list[str]:
    rows: Any = await redis.xpending_range(stream, group, "-", "+", 10_000)
    return [row["message_id"].decode() for row in rows]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, redis: Redis, consumers: Sequence[Consumer]
) -> AsyncIterator[Worker]:
    """A worker running in this process; stopped (gracefully) and awaited on exit."""
    async with running_many(redis, [(settings, consumers)]) as (worker,):
        yield worker


@contextlib.asynccontextmanager
async def running_many(
    redis: Redis, workers: Sequence[tuple[Settings, Sequence[Consumer]]]
) -> AsyncIterator[list[Worker]]:
    """Workers running in this process, one per (settings, consumers); all asked to stop
    at once on exit, then awaited, as replicas stop in a rolling deploy."""
    started = [Worker(settings, redis, consumers) for settings, consumers in workers]
    tasks = [asyncio.create_task(worker.run()) for worker in started]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


# --- worker child processes ------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
# The consumer of the worker children that record what they handle (tests/worker/plugins.py).
RECORDER = "tests.worker.plugins:recorder"


def worker_env(redis_url: str, prefix: str, **settings: str) -> dict[str, str]:
    """Environment of a `python -m worker` child: test settings, and this repository on
    PYTHONPATH so `--consumer tests.worker.plugins:recorder` imports."""
    env = {
        "RTT_REDIS_URL": redis_url,
        "RTT_KEY_PREFIX": prefix,
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_BLOCK": "100ms",
        "RTT_HEARTBEAT_INTERVAL": "200ms",
        "RTT_HEARTBEAT_TTL": "1s",
        "RTT_CLAIM_IDLE": "1h",
        "PYTHONPATH": str(REPO),
    }
    env.update({f"RTT_{name.upper()}": value for name, value in settings.items()})
    return env
