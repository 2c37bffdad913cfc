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

# KEYS: done record, sending lock. ARGV: token, lock ms.
# 0: already sent; 1: the lock is ours, send; 2: another worker is sending.
_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 2
"""
# KEYS: done record, sending lock. ARGV: token, done ttl ms ('' when the send failed).
_FINISH: Final = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], '1', 'PX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
_POLL_S: Final = 0.05


class Once:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: float, lock_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._lock_ms = max(1, int(lock_s * 1000))
        self._acquire = redis.register_script(_ACQUIRE)
        self._finish = redis.register_script(_FINISH)

    async def was_sent(self, sink: str, key: str) -> bool:
        return bool(await self._redis.exists(self._keys.alert_once(sink, key)))

    async def send(self, sink: str, key: str, send: Callable[[], Awaitable[None]]) -> bool:
        """Run `send` unless it already succeeded for (sink, key); True if it ran now.

        When another replica is sending the same thing, wait for it (at most its lock's
        lifetime): it either records success, and this one has nothing to do, or fails or
        dies, and this one takes over.
        """
        keys = [self._keys.alert_once(sink, key), self._keys.alert_sending(sink, key)]
        token = uuid.uuid4().hex
        async with asyncio.timeout(self._lock_ms / 1000 + 5):
            while True:
                state = int(await self._acquire(keys=keys, args=[token, self._lock_ms]))
                if state != 2:
                    break
                # Another worker's lock lives in Redis; nothing local to wait on but time.
                await asyncio.sleep(_POLL_S)
        if state == 0:
            return False
        sent = False
        try:
            await send()
            sent = True
        finally:
            await self._finish(keys=keys, args=[token, self._ttl_ms if sent else ""])
        return True
