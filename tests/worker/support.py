"""Helpers for the worker tests: add events, run a worker in this process, wait for Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from shared.entries import StreamEntry
from shared.keys import Keys
from shared.settings import Settings
from tests.fixtures import sample_body
from worker.consumers import Consumer
from worker.runtime import Worker

__all__ = ["add_events", "group_info", "pending_ids", "running", "wait_until"]


async def add_events(
    redis: Redis,
    settings: Settings,
    count: int,
    *,
    event_type: str = "realTimeTranscriptionStopped",
    cause: str | None = None,
    shard: int = 0,
    **overrides: Any,
) -> list[str]:
    """Add `count` events as the receiver would; return their entry ids."""
    stream = Keys(settings.key_prefix, settings.shards).events(shard)
    ids = []
    for n in range(count):
        body = sample_body(event_type, cause=cause, call_id=f"c-{n}", **overrides)
        entry = StreamEntry(event_type, body, 1_700_000_000_000 + n, f"req-{n}")
        ids.append((await redis.xadd(stream, entry.to_fields())).decode())
    return ids


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], *, timeout_s: float = 15, what: str = "condition"
) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
    raise AssertionError(what)  # unreachable: the timeout raises first


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
    worker = Worker(settings, redis, consumers)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
