"""What a drain of a stream cost: its rate, this process's CPU and Valkey's, per event."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

__all__ = ["Drained", "timed", "wait_drained"]


class Drained(msgspec.Struct, frozen=True):
    per_s: float  # events a second
    cpu_us: float  # CPU time of this process per event
    valkey_us: float  # Valkey's CPU time per event
    gc_us: float  # of it, the garbage collector's time per event


class _CollectorClock:
    """Seconds the garbage collector has run in this process (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._started


_collector = _CollectorClock()


async def wait_drained(redis: Redis, stream: str, group: str, count: int, poll_s: float) -> None:
    """Until `group` has read `count` entries of `stream` and acknowledged them all
    (Valkey says so: XINFO GROUPS, every `poll_s`)."""
    while True:
        groups: Any = await redis.xinfo_groups(stream)
        info = next((g for g in groups if g["name"] == group.encode()), None)
        if info and info["pending"] == 0 and (info.get("entries-read") or 0) >= count:
            return
        await asyncio.sleep(poll_s)


async def _valkey_cpu_s(redis: Redis) -> float:
    info: Any = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def timed(redis: Redis, count: int, run: Callable[[], Awaitable[None]]) -> Drained:
    """Run `run` (which drains `count` events) and measure it."""
    valkey_before = await _valkey_cpu_s(redis)
    cpu_before = time.process_time()
    gc_before = _collector.total_s
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_before
    gc_s = _collector.total_s - gc_before
    valkey_s = await _valkey_cpu_s(redis) - valkey_before
    return Drained(count / elapsed, cpu_s * 1e6 / count, valkey_s * 1e6 / count, gc_s * 1e6 / count)
