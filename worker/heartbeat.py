"""Liveness: each worker refreshes a key with a TTL per consumer group it serves.

A worker whose keys expired is dead: the others take over its pending entries at once,
instead of waiting for a long idle timeout that would also re-run slow live handlers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterable, Sequence

from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from shared.connections import REDIS_DOWN
from shared.keys import Keys
from shared.logs import error_text

__all__ = ["Heartbeat", "WorkerIdInUse", "alive", "holder_prefix"]


def holder_prefix(pid: int) -> str:
    """How the heartbeat keys of the process `pid` on this host begin."""
    return f"{socket.gethostname()}:{pid}:"


class WorkerIdInUse(Exception):
    """Another live process already runs under this worker id."""


class Heartbeat:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        groups: Sequence[str],
        worker_id: str,
        *,
        interval_s: float,
        ttl_s: float,
        log: FilteringBoundLogger,
    ) -> None:
        self.redis = redis
        self.log = log
        self.keys = [keys.heartbeat(group, worker_id) for group in groups]
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.ttl_ms = max(1, int(ttl_s * 1000))
        # Tells this process's keys from those of another process with the same id.
        self.token = holder_prefix(os.getpid()) + secrets.token_hex(4)

    async def acquire(self, timeout_s: float) -> None:
        """Take the worker id. A crashed predecessor's keys expire within one TTL, so wait
        that long; keys still refreshed after that belong to a live twin."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.set(key, self.token, px=self.ttl_ms, nx=True)
                    pipe.get(key)
                replies = await pipe.execute()
            holders = {
                holder.decode() if isinstance(holder, bytes) else holder for holder in replies[1::2]
            }
            if holders == {self.token}:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise WorkerIdInUse(
                    f"worker id {self.worker_id!r} is used by a live worker "
                    f"({', '.join(sorted(h for h in holders if h and h != self.token))}); "
                    "give each worker its own RTT_WORKER_ID"
                )
            self.log.warning("worker_id_busy", worker_id=self.worker_id, retry_in_s=self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def beat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.set(key, self.token, px=self.ttl_ms)
            await pipe.execute()

    async def run(self) -> None:
        """Beat every interval until cancelled; a failed beat is logged, not fatal."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.beat()
            except REDIS_DOWN as exc:
                self.log.warning(
                    "heartbeat_failed", worker_id=self.worker_id, error=error_text(exc)
                )

    async def clear(self) -> None:
        """Say we are gone, so what we leave pending is taken over without waiting."""
        await self.redis.delete(*self.keys)


async def alive(redis: Redis, keys: Keys, group: str, worker_ids: Iterable[str]) -> dict[str, bool]:
    names = list(worker_ids)
    if not names:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(keys.heartbeat(group, name))
        replies = await pipe.execute()
    return {name: bool(found) for name, found in zip(names, replies, strict=True)}
