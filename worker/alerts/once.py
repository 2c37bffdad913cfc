"""Send a notification to a sink once, across redeliveries, replays and worker replicas.

A record per (sink, key) is written after a successful send and checked before one; a
lock (SET NX PX) keeps two replicas from sending the same thing at once. The lock is
short and renewed while its sender lives, so a sender that dies frees it about when its
heartbeat lapses, which is also when its entries are taken over: the copy that follows
a crash goes out within seconds, not after the longest send ever allowed.

Once a sink has taken a notification, nothing Redis does makes it send again: the record
is written until Redis answers, with the sent fact kept here meanwhile. The one duplicate
left possible is a worker dying (or being stopped while Redis is away) between the sink's
answer and the record; the notification's key lets the receiving end fold it away.

With RTT_STORE_REPLICAS, a claim counts only once that many replicas have it (WAIT), and
so does a record: a failover cannot lose either and have the notification sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from shared.keys import Keys
from shared.logs import error_text
from shared.replicas import NotReplicated, Wait
from worker.retry import backoff_s

from .pipelined import Call, Split, by_slot, run

__all__ = ["CLAIMED", "SENDING", "SENT", "Once"]

# What a claim answers: sent already, ours to send, or another worker is sending it.
SENT, CLAIMED, SENDING = 0, 1, 2

# KEYS: done record, sending lock. ARGV: token, lock ms.
# 0: already sent; 1: the lock is ours, send; 2: another worker is sending.
_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 2
"""
# KEYS: sending lock. ARGV: token, lock ms. Extends the lock only while it is ours.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: done record, sending lock. ARGV: token, done ttl ms ('' when the send failed).
_FINISH: Final = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], '1', 'PX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
# The batch forms, for many (sink, key) at once: KEYS: the first one's done record (where a
# cluster sends the call; every item of a call shares its slot there). ARGV: the done record
# and lock heads (`Keys.alert_once_head`, `alert_sending_head`), the script's own, then
# the items' `sink:key`, of which it builds the keys, as one MessagePack array.
# Claims. ARGV: heads, token, lock ms, items. Per item as _ACQUIRE: 0, 1 or 2.
_ACQUIRE_MANY: Final = """
local done, lock, token, lock_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i, item in ipairs(cmsgpack.unpack(ARGV[5])) do
  item = item .. '}'
  if redis.call('EXISTS', done .. item) == 1 then out[i] = 0
  elseif redis.call('SET', lock .. item, token, 'NX', 'PX', lock_ms) then out[i] = 1
  else out[i] = 2 end
end
return out
"""
# Records of claimed sends. ARGV: heads, done ttl ms, items. The lock is left to lapse: a
# claim looks at the record first, so a lock beside a record holds back nobody.
_RECORD_MANY: Final = """
local done, ttl = ARGV[1], ARGV[3]
local items = cmsgpack.unpack(ARGV[4])
for _, item in ipairs(items) do redis.call('SET', done .. item .. '}', '1', 'PX', ttl) end
return #items
"""
# Claims given up. ARGV: heads, token, items. Each lock freed while it is the token's.
_RELEASE_MANY: Final = """
local lock, token = ARGV[2], ARGV[3]
local items = cmsgpack.unpack(ARGV[4])
for _, item in ipairs(items) do
  local key = lock .. item .. '}'
  if redis.call('GET', key) == token then redis.call('DEL', key) end
end
return #items
"""
_pack: Final = msgspec.msgpack.Encoder().encode
_POLL_S: Final = 0.05
# Writing the record while Redis is away: soon at first, then twice a second at most,
# so the record lands within half a second of Redis answering again.
_RECORD_BASE_S: Final = 0.05
_RECORD_MAX_S: Final = 0.5


class Once:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        log: FilteringBoundLogger,
        *,
        ttl_s: float,
        lock_s: float,
        wait_s: float,
        replicas: Wait | None = None,
    ) -> None:
        """`lock_s`: how long a silent sender's lock outlives it; `wait_s`: how long to wait
        for a live sender of the same thing before giving up (and being retried);
        `replicas`: the replicas each claim and record must reach (RTT_STORE_REPLICAS)."""
        self.replicas = replicas
        self._redis = redis
        self._keys = keys
        self._log = log
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._lock_ms = max(1, int(lock_s * 1000))
        self._renew_s = lock_s / 3
        self._wait_s = wait_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._finish = redis.register_script(_FINISH)
        self._acquire_many = redis.register_script(_ACQUIRE_MANY)
        self._record_many = redis.register_script(_RECORD_MANY)
        self._release_many = redis.register_script(_RELEASE_MANY)
        self._keepers: set[asyncio.Task[None]] = set()  # strong references while they run

    def claim_calls(self, items: Sequence[tuple[str, str]], token: str) -> list[Split]:
        """The claims of these (sink, key) for `token`, to run in a batch: per item SENT,
        CLAIMED or SENDING. For a send that takes no time (a log line): no lock renewal
        runs meanwhile."""
        return self._many(self._acquire_many, items, [token, self._lock_ms])

    def release_calls(self, items: Sequence[tuple[str, str]], token: str) -> list[Split]:
        """Claims given up before their send (their replicas did not confirm them): the
        locks freed, no record written; to run in a batch."""
        return self._many(self._release_many, items, [token])

    def record_calls(self, items: Sequence[tuple[str, str]]) -> list[Split]:
        """After claimed sends went through: their records, to run in a batch."""
        return self._many(self._record_many, items, [self._ttl_ms])

    def _many(
        self, script: AsyncScript, items: Sequence[tuple[str, str]], args: list[str | int]
    ) -> list[Split]:
        keys = self._keys
        heads = [keys.alert_once_head, keys.alert_sending_head, *args]
        splits = []
        for indices in by_slot(self._redis, items, lambda item: keys.alert_once(*item)):
            first = items[indices[0]]
            parts = [f"{items[n][0]}:{items[n][1]}" for n in indices]
            call = Call(script, [keys.alert_once(*first)], [*heads, _pack(parts)])
            splits.append(Split(call, indices))
        return splits

    async def record(self, sink: str, key: str, token: str) -> None:
        """A claimed send went through, and its batched record did not land: write it until
        Redis takes it, the lock renewed meanwhile, as `send` does."""
        keys = [self._keys.alert_once(sink, key), self._keys.alert_sending(sink, key)]
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep(keys[1], token, done))
        self._keepers.add(keeper)
        keeper.add_done_callback(self._keepers.discard)
        try:
            await self._record(keys, token, sink, key)
        finally:
            done.set()

    async def send(self, sink: str, key: str, send: Callable[[], Awaitable[None]]) -> bool:
        """Run `send` unless it already succeeded for (sink, key); True if it ran now.

        When another replica is sending the same thing, wait for it: it either records
        success, and this one has nothing to do, or fails or dies, and this one takes over.
        """
        keys = [self._keys.alert_once(sink, key), self._keys.alert_sending(sink, key)]
        token = uuid.uuid4().hex
        async with asyncio.timeout(self._wait_s):
            while True:
                try:
                    state = int(await self._call(self._acquire, keys, [token, self._lock_ms]))
                except NotReplicated:
                    await self._release(keys, token)  # not ours to keep: retried later
                    raise
                if state != 2:
                    break
                # Another worker's lock lives in Redis; nothing local to wait on but time.
                await asyncio.sleep(_POLL_S)
        if state == 0:
            return False
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep(keys[1], token, done))
        self._keepers.add(keeper)
        keeper.add_done_callback(self._keepers.discard)
        try:
            try:
                await send()
            except BaseException:
                await self._release(keys, token)
                raise
            await self._record(keys, token, sink, key)
        finally:
            # The keeper ends by itself at its next tick. It is neither cancelled nor
            # awaited: a redis-py call cancelled while Redis comes back can hang its task,
            # and this send must not wait on it.
            done.set()
        return True

    async def _call(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """The script, then (with replicas) WAIT on the same connection."""
        if self.replicas is None:
            return await script(keys=keys, args=args)
        [result] = await run(self._redis, [Call(script, keys, args)], self.replicas)
        if isinstance(result, Exception):
            raise result
        return result

    async def _keep(self, lock: str, token: str, done: asyncio.Event) -> None:
        """Renew the lock while the send (and its record) runs; a failed renewal is retried
        at the next tick: the lock is a courtesy to other replicas, not a guarantee."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._renew_s)
            if done.is_set():
                return
            with contextlib.suppress(RedisError, OSError):
                await self._renew(keys=[lock], args=[token, self._lock_ms])

    async def _release(self, keys: list[str], token: str) -> None:
        """After a failed send: free the lock now if Redis lets us, else it lapses."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._lock_ms / 1000):
                await self._finish(keys=keys, args=[token, ""])

    async def _record(self, keys: list[str], token: str, sink: str, key: str) -> None:
        """The sink has it: write the record until Redis takes it, never send again."""
        failures = 0
        try:
            while True:
                try:
                    await self._call(self._finish, keys, [token, self._ttl_ms])
                    break
                except (RedisError, OSError) as exc:
                    failures += 1
                    delay_s = backoff_s(failures, _RECORD_BASE_S, _RECORD_MAX_S)
                    if failures == 1 or failures % 20 == 0:  # not a line per attempt
                        self._log.warning(
                            "alert_record_retry",
                            sink=sink,
                            key=key,
                            attempt=failures,
                            retry_in_s=round(delay_s, 3),
                            error=error_text(exc),
                        )
                    await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            # Stopped before Redis came back: the record is lost, and a redelivery of this
            # entry will send the notification again (with the same key).
            self._log.error("alert_record_lost", sink=sink, key=key, attempts=failures)
            raise
        if failures:
            self._log.info("alert_recorded", sink=sink, key=key, attempts=failures + 1)
