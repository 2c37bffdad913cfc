"""The Redis side of the store path: concurrent requests share pipelined round trips.

A request queues its item and waits. A flush sends everything queued as one pipeline of
EVALSHA calls of one script, which checks the dedup marker and XADDs in one atomic step;
requests arriving meanwhile queue up for the next flush, so under load batches grow by
themselves and at low load nothing waits for a timer. A reply (an entry id, or nil for a
repeat) still comes for each item: a 204 means that item's XADD was acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from shared.entries import Fields

__all__ = ["RedisFailed", "RedisWriter", "StoreItem"]

# KEYS[1] stream, KEYS[2] dedup marker (optional, in the stream's hash slot).
# ARGV[1] marker TTL in ms, ARGV[2] MAXLEN (0: no trimming), ARGV[3..] field, value, ...
# XADD comes before SET so a failing XADD leaves no marker that would hide a retry.
_STORE_SCRIPT = """
local guarded = #KEYS > 1
if guarded and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id
if ARGV[2] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
end
if guarded then redis.call('SET', KEYS[2], id, 'PX', ARGV[1]) end
return id
"""
_STORE_SHA = hashlib.sha1(_STORE_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoreItem:
    stream: str
    fields: Fields
    # Marks the item as stored for the dedup window; a second item with the same key is
    # not added. In the stream's hash slot (see shared.keys).
    dedup_key: str | None = None
    # Set for bounded forensic streams only; rtt:events is never trimmed at XADD time.
    max_len: int | None = None


class RedisFailed(Exception):
    """Redis did not acknowledge the item in time (down, frozen, out of memory...)."""


Reply = bytes | None | RedisFailed


class RedisWriter:
    """Shares Redis round trips among concurrent `put` calls."""

    def __init__(
        self,
        redis: Redis,
        *,
        dedup_ttl_ms: int,
        timeout_s: float,
        batch_max: int,
        max_in_flight: int = 4,
    ) -> None:
        self._redis = redis
        self._dedup_ttl_ms = dedup_ttl_ms
        self._timeout_s = timeout_s
        self._batch_max = batch_max
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[StoreItem, asyncio.Future[bytes | None]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._kick_scheduled = False

    async def put(self, item: StoreItem) -> bytes | None:
        """The new entry id, or None for a repeat; RedisFailed if Redis did not answer in time."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._kick_scheduled:
            # Flush on the next loop turn: requests read in this turn join the same batch.
            self._kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)
        return await future

    def _kick(self) -> None:
        self._kick_scheduled = False
        # One flush at a time while batches are small; more only when a full batch waits.
        while self._queue and (
            not self._flushes
            or (len(self._queue) >= self._batch_max and len(self._flushes) < self._max_in_flight)
        ):
            batch = self._queue[: self._batch_max]
            del self._queue[: self._batch_max]
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._queue:
            self._kick()

    async def _flush(self, batch: list[tuple[StoreItem, asyncio.Future[bytes | None]]]) -> None:
        try:
            replies = await self.run([item for item, _ in batch])
        except RedisFailed as exc:
            # Redis is failing: what waits behind this batch would only wait as long again.
            batch += self._queue
            self._queue = []
            replies = [exc] * len(batch)
        for (_, future), reply in zip(batch, replies, strict=False):
            if future.done():
                continue
            if isinstance(reply, RedisFailed):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def run(self, items: Sequence[StoreItem]) -> list[Reply]:
        """Send items in one pipeline, within the deadline. Raises RedisFailed if it is missed."""
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._send(items)
                if any(isinstance(reply, NoScriptError) for reply in replies):
                    # A restarted (or failed-over) server forgot the script; nothing ran.
                    await self._redis.script_load(_STORE_SCRIPT)
                    replies = await self._send(items)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RedisFailed(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc
        return [
            RedisFailed(f"{type(reply).__name__}: {reply}")
            if isinstance(reply, Exception)
            else reply
            for reply in replies
        ]

    async def _send(self, items: Sequence[StoreItem]) -> list[bytes | Exception | None]:
        pipe = self._redis.pipeline(transaction=False)
        ttl = self._dedup_ttl_ms
        for item in items:
            args: list[object] = []
            for name, value in item.fields.items():
                args += (name, value)
            if item.dedup_key is None:
                keys: tuple[str, ...] = (item.stream,)
            else:
                keys = (item.stream, item.dedup_key)
            pipe.execute_command(
                "EVALSHA", _STORE_SHA, len(keys), *keys, ttl, item.max_len or 0, *args
            )
        replies: list[bytes | Exception | None] = await pipe.execute(raise_on_error=False)
        return replies

    async def ping(self) -> None:
        """Raise RedisFailed unless Redis answers within the deadline."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RedisFailed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Wait for the flushes under way (each ends by its deadline)."""
        while self._queue or self._flushes:
            if self._queue and not self._flushes:
                self._kick()
            await asyncio.gather(*self._flushes, return_exceptions=True)
