"""Send a notification to a sink once, across redeliveries, replays and worker replicas.

A record per (sink, key) is written after a successful send and checked before one; a
short-lived lock (SET NX PX) keeps two replicas from sending the same thing at once. The
one duplicate left possible is a crash between sending and recording; the `dedup_key`
each notification carries lets the receiving end (PagerDuty does) fold it away.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

from redis.asyncio import Redis

from shared.keys import Keys

__all__ = ["Once"]

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_POLL_S: Final = 0.05


class Once:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: float, lock_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._lock_ms = max(1, int(lock_s * 1000))
        self._release = redis.register_script(_RELEASE)

    async def was_sent(self, sink: str, key: str) -> bool:
        return bool(await self._redis.exists(self._keys.alert_once(sink, key)))

    async def send(self, sink: str, key: str, send: Callable[[], Awaitable[None]]) -> bool:
        """Run `send` unless it already succeeded for (sink, key); True if it ran now.

        When another replica is sending the same thing, wait for it (at most its lock's
        lifetime): it either records success, and this one has nothing to do, or fails or
        dies, and this one takes over.
        """
        done = self._keys.alert_once(sink, key)
        lock = self._keys.alert_sending(sink, key)
        token = uuid.uuid4().hex
        async with asyncio.timeout(self._lock_ms / 1000 + 5):
            while True:
                if await self._redis.exists(done):
                    return False
                if await self._redis.set(lock, token, nx=True, px=self._lock_ms):
                    break
                await asyncio.sleep(_POLL_S)
        try:
            if await self._redis.exists(done):  # finished between our check and our lock
                return False
            await send()
            await self._redis.set(done, "1", px=self._ttl_ms)
            return True
        finally:
            await self._release(keys=[lock], args=[token])
