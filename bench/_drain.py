"""What a drain of a stream cost: its rate, this process's CPU and Valkey's, per event."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

__all__ = ["Drained", "timed"]


class Drained(msgspec.Struct, frozen=True):
    per_s: float  # events a second
    cpu_us: float  # CPU time of this process per event
    valkey_us: float  # Valkey's CPU time per event


async def _valkey_cpu_s(redis: Redis) -> float:
    info: Any = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def timed(redis: Redis, count: int, run: Callable[[], Awaitable[None]]) -> Drained:
    """Run `run` (which drains `count` events) and measure it."""
    valkey_before = await _valkey_cpu_s(redis)
    cpu_before = time.process_time()
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_before
    valkey_s = await _valkey_cpu_s(redis) - valkey_before
    return Drained(count / elapsed, cpu_s * 1e6 / count, valkey_s * 1e6 / count)
