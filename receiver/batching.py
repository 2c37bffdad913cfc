"""The Redis side of the store path: concurrent requests share round trips and script calls.

A request queues its item and waits. A flush takes everything queued and, for each stream,
makes one call of one script that checks each item's dedup marker and XADDs it, all in
one atomic step; requests arriving meanwhile queue up for the next flush, so under load
batches grow by themselves and at low load nothing waits for a timer. Each item still gets
its own reply (an entry id, or nil for a repeat): a 204 means that item's XADD was
acknowledged by Redis.

Whatever fails inside a flush, every waiter gets an answer. A failure that is not Redis's
(an item hiredis cannot pack, a bug) is traced to the items that cause it, which alone are
refused: nothing one request carries can fail another's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, ResponseError

from shared.connections import is_permission_denied, report_permission_denied
from shared.entries import Fields
from shared.logs import get_logger
from shared.replicas import Wait

__all__ = ["ItemRefused", "RedisFailed", "RedisWriter", "StoreItem"]

log = get_logger()
# How long the writer keeps a connection before it goes back through the pool's checks.
_HOLD_S = 1.0

# KEYS: for each item, its stream and its dedup marker (same hash slot: one stream a call).
# ARGV[1]: marker TTL in ms; then for each item: MAXLEN (0: no trimming), its member in a
# marker set ('' if its marker is a key of its own), the number of field and value
# arguments, and those arguments. Returns one entry id, or nil for a repeat, per item.
# XADD comes before the marker, so a failing XADD leaves no marker that would hide the
# retry; what a failing call did write is recognised by its marker on that retry.
# A forensic stream's markers are one sorted set by time, cut to the stream's MAXLEN and
# to the TTL: bounded with the stream, however many bad requests arrive.
_STORE_SCRIPT = """
local ttl = tonumber(ARGV[1])
local replies = {}
local a = 2
for k = 1, #KEYS, 2 do
  local maxlen, member, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local first, last = a + 3, a + 2 + n
  a = last + 1
  local seen
  if member == '' then
    seen = redis.call('EXISTS', KEYS[k + 1]) == 1
  else
    seen = redis.call('ZSCORE', KEYS[k + 1], member) ~= false
  end
  if seen then
    replies[#replies + 1] = false
  else
    local id
    if maxlen ~= '0' then
      id = redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, last))
    else
      id = redis.call('XADD', KEYS[k], '*', unpack(ARGV, first, last))
    end
    if member == '' then
      redis.call('SET', KEYS[k + 1], id, 'PX', ttl)
    else
      local now = tonumber(string.match(id, '^%d+'))
      redis.call('ZADD', KEYS[k + 1], now, member)
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now - ttl)
      if maxlen ~= '0' then
        redis.call('ZREMRANGEBYRANK', KEYS[k + 1], 0, -tonumber(maxlen) - 1)
      end
      redis.call('PEXPIRE', KEYS[k + 1], ttl)
    end
    replies[#replies + 1] = id
  end
end
return replies
"""
_STORE_SHA = hashlib.sha1(_STORE_SCRIPT.encode()).hexdigest()

# The usual call, for accepted events only: the same checks and writes as _STORE_SCRIPT,
# with the entry's field names (shared.entries) written here instead of sent with every
# event. KEYS: the stream, then each event's dedup marker. ARGV[1]: marker TTL in ms; then
# for each event its type, body, received_at and request_id. Five arguments an event
# instead of thirteen: hiredis packs each one with a printf of its own.
_EVENTS_SCRIPT = """
local ttl = ARGV[1]
local stream = KEYS[1]
local replies = {}
for k = 2, #KEYS do
  local a = 4 * k - 6
  if redis.call('EXISTS', KEYS[k]) == 1 then
    replies[k - 1] = false
  else
    local id = redis.call('XADD', stream, '*', 'type', ARGV[a], 'body', ARGV[a + 1],
      'received_at', ARGV[a + 2], 'request_id', ARGV[a + 3])
    redis.call('SET', KEYS[k], id, 'PX', ttl)
    replies[k - 1] = id
  end
end
return replies
"""
_EVENTS_SHA = hashlib.sha1(_EVENTS_SCRIPT.encode()).hexdigest()
# The fields of an entry the events script writes (shared.entries).
_EVENT_FIELD_SET = frozenset({"type", "body", "received_at", "request_id"})


class StoreItem(NamedTuple):
    """One entry to add; a tuple because one is built per request."""

    stream: str
    fields: Fields
    # Marks the item as stored for the dedup window: a second item with the same key is
    # not added. In the stream's hash slot (see shared.keys).
    dedup_key: str
    # Set for bounded forensic streams only; rtt:events is never trimmed at XADD time.
    max_len: int | None = None
    # Forensic items: `dedup_key` names the stream's marker set and this is the item's
    # member in it.
    marker: str | None = None


class RedisFailed(Exception):
    """Redis did not acknowledge the item in time (down, frozen, out of memory...)."""


class NotReplicated(RedisFailed):
    """Written on the master, but not on enough replicas in time: a failover may lose it."""


class ItemRefused(Exception):
    """This item cannot be written at all (it cannot be packed); Redis itself is fine."""


Reply = bytes | None | RedisFailed | ItemRefused


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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
        replicas: int = 0,
        replicas_timeout_ms: int = 500,
    ) -> None:
        self._redis = redis
        # With replicas, each exchange ends with WAIT on its connection: the items count
        # as stored only once that many replicas have them (RTT_STORE_REPLICAS).
        self._wait = Wait(replicas, replicas_timeout_ms) if replicas else None
        # The path a flush takes: to one node the calls go hand-packed on one pooled
        # connection (`_exchange`); a Cluster client sends each to the node of its slot.
        self._cluster = not isinstance(redis, Redis)
        self._pool: ConnectionPool | None = None if self._cluster else redis.connection_pool
        self._dedup_ttl_ms = dedup_ttl_ms
        self._timeout_s = timeout_s
        self._batch_max = batch_max
        self._max_in_flight = max_in_flight
        # Connections this writer holds between flushes, each with the time it was taken
        # from the pool: under load a flush skips the pool's locks, events and health
        # checks; one held longer than _HOLD_S goes back through the pool.
        self._held: list[tuple[Connection, float]] = []
        # Behind Sentinel every flush takes its connection from the pool, whose hand-out
        # moves a connection to the master the sentinels name now: a held one would keep
        # writing to the node it was taken for after a failover.
        self._hold_s = 0.0 if isinstance(self._pool, SentinelConnectionPool) else _HOLD_S
        self._queue: list[tuple[StoreItem, asyncio.Future[bytes | None]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        # The flush task created and not yet started, if any (`_start_flush`).
        self._starting: asyncio.Task[None] | None = None
        # The loop of the first put; the writer lives on it (its app's, or its test's).
        self._loop: asyncio.AbstractEventLoop | None = None

    def put(self, item: StoreItem) -> asyncio.Future[bytes | None]:
        """Queue an item. Its future ends with the new entry id, or None for a repeat;
        RedisFailed if Redis did not answer in time. (A future, not a coroutine: one
        frame less on every request.)"""
        loop = self._loop
        if loop is None:
            # Taken once: on Python 3.11 every get_running_loop() is a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._queue.append((item, future))
        if self._starting is None and len(self._flushes) < self._max_in_flight:
            self._start_flush(loop)
        return future

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        # The task's first step comes on the next loop turn, and takes what the requests
        # of this turn queued meanwhile: under load batches grow by themselves, at low
        # load the event is sent on the next turn. At most one such task waits to start.
        task = self._starting = loop.create_task(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)

    def _kick(self) -> None:
        # Up to max_in_flight flushes at once: while one is in Redis (its script, then the
        # AOF's fsync), the next batch is read and sent, and flushes that reach Redis
        # together share one fsync; the receiver does not sit idle waiting for Redis.
        if self._queue and self._starting is None and len(self._flushes) < self._max_in_flight:
            self._start_flush(cast(asyncio.AbstractEventLoop, self._loop))

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if task is self._starting:  # cancelled before its first step: it took no batch
            self._starting = None
        self._kick()

    async def _flush(self) -> None:
        self._starting = None  # this task: only one waits to start at a time
        batch = self._queue[: self._batch_max]
        del self._queue[: self._batch_max]
        # More than a batch queued: the next flush starts now, up to max_in_flight.
        self._kick()
        if batch:
            await self._flush_batch(batch)

    async def _flush_batch(
        self, batch: list[tuple[StoreItem, asyncio.Future[bytes | None]]]
    ) -> None:
        try:
            try:
                replies = await self.run([item for item, _ in batch])
            except RedisFailed as exc:
                # Redis is failing: what waits behind this batch would only wait as long again.
                batch += self._queue
                self._queue = []
                replies = [exc] * len(batch)
            except Exception as exc:
                # Not expected (run traces what it can to items): the batch goes to the spool.
                log.exception("store_flush_failed", items=len(batch))
                replies = [RedisFailed(_describe(exc))] * len(batch)
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            # Cancelled, or failed while answering: no waiter is left without an answer.
            for _, future in batch:
                if not future.done():
                    future.set_exception(RedisFailed("the write was interrupted"))

    async def run(self, items: Sequence[StoreItem]) -> list[Reply]:
        """Store items in one round trip, within the deadline; RedisFailed if it is missed.

        Items are returned in order; an item whose script call failed (for instance Redis
        out of memory) gets a RedisFailed of its own, and one that cannot be packed an
        ItemRefused, while the others are written.
        """
        try:
            return await self._run(items)
        except RedisFailed:
            raise
        except Exception as exc:
            return await self._isolate(items, exc)

    async def _isolate(self, items: Sequence[StoreItem], exc: Exception) -> list[Reply]:
        """A failure that is not Redis's: refuse the items that cause it, write the others.

        Packing each item alone, in memory, finds them; a second run is safe because the
        script recognises by its marker whatever the first one may have written.
        """
        results: list[Reply] = [None] * len(items)
        fine: list[int] = []
        for index, item in enumerate(items):
            try:
                hiredis.pack_command(self._call([item]))  # type: ignore[arg-type]
            except Exception as item_exc:
                results[index] = ItemRefused(_describe(item_exc))
            else:
                fine.append(index)
        if len(fine) == len(items):
            # No item explains it: a bug, not a bad item. The items go to the spool.
            log.error("store_write_failed", error=_describe(exc), items=len(items))
            raise RedisFailed(_describe(exc)) from exc
        if fine:
            replies = await self._run([items[index] for index in fine])
            for index, reply in zip(fine, replies, strict=True):
                results[index] = reply
        return results

    async def _run(self, items: Sequence[StoreItem]) -> list[Reply]:
        if not items:
            return []
        groups: dict[str, list[int]] = {}
        stream = items[0].stream
        if all(item.stream == stream for item in items):  # the usual case: one stream
            groups[stream] = list(range(len(items)))
            calls = [self._call(items)]
        else:
            for index, item in enumerate(items):
                groups.setdefault(item.stream, []).append(index)
            calls = [self._call([items[i] for i in indexes]) for indexes in groups.values()]
        streams = list(groups)
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._send(calls, streams)
                if any(isinstance(reply, NoScriptError) for reply in replies):
                    # A restarted (or failed-over) server forgot the script; nothing ran.
                    await self._redis.script_load(_STORE_SCRIPT)
                    await self._redis.script_load(_EVENTS_SCRIPT)
                    replies = await self._send(calls, streams)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RedisFailed(_describe(exc)) from exc
        if len(replies) == 1 and isinstance(replies[0], list) and len(replies[0]) == len(items):
            return cast(list[Reply], replies[0])  # one stream, every item answered
        results: list[Reply] = [None] * len(items)
        for indexes, reply in zip(groups.values(), replies, strict=True):
            if isinstance(reply, ResponseError) and is_permission_denied(reply):
                # Said once; the items go to the spool until the ACL lets the script run.
                report_permission_denied(self._redis, "EVALSHA", reply)
            if isinstance(reply, Exception) or not isinstance(reply, list):
                failed = RedisFailed(f"{type(reply).__name__}: {reply}")
                for index in indexes:
                    results[index] = failed
                continue
            for index, entry_id in zip(indexes, reply, strict=True):
                results[index] = entry_id
        return results

    def _call(self, items: Sequence[StoreItem]) -> tuple[object, ...]:
        """One script call for items of one stream: the events script when every item is
        an accepted event with exactly the usual fields, else the general one."""
        dedup_keys: list[object] = []
        values: list[object] = [self._dedup_ttl_ms]
        for item in items:
            fields = item.fields
            if item.marker is not None or item.max_len or fields.keys() != _EVENT_FIELD_SET:
                return self._general_call(items)
            dedup_keys.append(item.dedup_key)
            values += (fields["type"], fields["body"], fields["received_at"], fields["request_id"])
        stream = items[0].stream
        return ("EVALSHA", _EVENTS_SHA, len(dedup_keys) + 1, stream, *dedup_keys, *values)

    def _general_call(self, items: Sequence[StoreItem]) -> tuple[object, ...]:
        keys: list[object] = []
        args: list[object] = [self._dedup_ttl_ms]
        for item in items:
            keys += (item.stream, item.dedup_key)
            args += (item.max_len or 0, item.marker or "", 2 * len(item.fields))
            for name, value in item.fields.items():
                args += (name, value)
        return ("EVALSHA", _STORE_SHA, len(keys), *keys, *args)

    async def _send(
        self, calls: Sequence[tuple[object, ...]], streams: Sequence[str]
    ) -> list[object]:
        if self._cluster:
            if self._wait is not None:
                return await self._send_per_node(calls, streams)
            # Its pipeline sends each call to the node of its slot.
            pipe = self._redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*call)
            replies: list[object] = await pipe.execute(raise_on_error=False)
            return replies
        # One node: the calls packed by hiredis (in C) in one write on one pooled connection,
        # the replies read in order by redis-py's parser. redis-py's asyncio pipeline packs in
        # Python: through it the receiver measured 109 us of CPU per request instead of 82-99
        # (`python -m bench receiver`: ratio 0.71 instead of 0.78-0.82).
        # (The stub of pack_command types its argument as a 1-tuple, hence the ignore.)
        pool = cast(ConnectionPool, self._pool)
        now = time.monotonic()
        while self._held:
            connection, taken = self._held.pop()
            if now - taken < self._hold_s:
                break
            await pool.release(connection)
        else:
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            taken = now
        try:
            replies = await self._exchange(connection, calls)
        except BaseException:
            # Broken or cancelled mid-way (_exchange disconnected it): the pool reconnects it.
            await pool.release(connection)
            raise
        if self._hold_s:
            self._held.append((connection, taken))
        else:
            await pool.release(connection)
        return replies

    async def _exchange(
        self, connection: Connection, calls: Sequence[tuple[object, ...]]
    ) -> list[object]:
        """Send the calls (then WAIT, with replicas) in one write; read every reply."""
        sent = [*calls, self._wait.command()] if self._wait is not None else list(calls)
        # (The stub of pack_command types its argument as a 1-tuple, hence the ignore.)
        packed = b"".join(hiredis.pack_command(call) for call in sent)  # type: ignore[arg-type]
        try:
            # Written on the connection's stream as redis-py's send_packed_command does, but
            # without its wait_for (a task per write) for socket_timeout: the flush's
            # deadline bounds the exchange.
            writer = connection._writer
            if writer is None or writer.is_closing():
                await connection.connect()  # type: ignore[no-untyped-call]
                writer = cast(asyncio.StreamWriter, connection._writer)
            writer.write(packed)
            await writer.drain()
            replies: list[object] = []
            for _ in sent:
                try:
                    # No per-reply timer: the flush's deadline bounds the whole exchange.
                    reply = await connection.read_response(disable_decoding=True, timeout=math.inf)
                    replies.append(reply)
                except ResponseError as exc:
                    # Read in full: the connection stays in step with the replies.
                    replies.append(exc)
        except BaseException:
            # Cancelled (deadline) or broken mid-way: replies may still be on their way.
            await connection.disconnect()
            raise
        if self._wait is None:
            return replies
        acked, wanted = replies.pop(), self._wait.replicas
        if isinstance(acked, int) and acked >= wanted:
            return replies
        failed = NotReplicated(
            f"WAIT: {acked} of {wanted} replicas within {self._wait.command()[2]} ms"
            if isinstance(acked, int)
            else f"WAIT: {acked!r}"
        )
        return [reply if isinstance(reply, Exception) else failed for reply in replies]

    async def _send_per_node(
        self, calls: Sequence[tuple[object, ...]], streams: Sequence[str]
    ) -> list[object]:
        """Redis Cluster with replicas: WAIT must follow the writes on the connection that
        made them, so each node's calls go packed on one of its connections, then WAIT.
        A redirection or a lost node fails its items (to the spool) and reloads the slots."""
        cluster = cast(RedisCluster, self._redis)
        # The slots are learned on a client's first command; this path sends none of its
        # own through the client (a no-op once it knows them).
        await cluster.initialize()
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for index, stream in enumerate(streams):
            node = cluster.get_node_from_key(stream)
            if node is None:
                raise RedisFailed(f"no cluster node serves the slot of {stream}")
            by_node.setdefault(node.name, (node, []))[1].append(index)

        async def on_node(node: Any, indexes: list[int]) -> list[object]:
            connection = node.acquire_connection()
            try:
                return await self._exchange(connection, [calls[i] for i in indexes])
            except (RedisError, OSError) as exc:
                return [RedisFailed(_describe(exc))] * len(indexes)
            finally:
                node.release(connection)

        results = await asyncio.gather(*(on_node(n, ix) for n, ix in by_node.values()))
        replies: list[object] = [None] * len(calls)
        stale = False
        for (_, indexes), node_replies in zip(by_node.values(), results, strict=True):
            for index, reply in zip(indexes, node_replies, strict=True):
                replies[index] = reply
                # A lost node or moved slots, not replicas that are slow: reload the slots.
                stale = stale or (
                    isinstance(reply, RedisFailed | MovedError | AskError)
                    and not isinstance(reply, NotReplicated)
                )
        if stale:
            with contextlib.suppress(RedisError, OSError):
                await cluster.nodes_manager.initialize()
        return replies

    async def ping(self) -> None:
        """Raise RedisFailed unless Redis answers within the deadline."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RedisFailed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Wait for the flushes under way (each ends by its deadline), then hand the held
        connections back to the pool."""
        while self._queue or self._flushes:
            if self._queue and not self._flushes:
                self._kick()
            await asyncio.gather(*self._flushes, return_exceptions=True)
        while self._held:
            connection, _ = self._held.pop()
            await cast(ConnectionPool, self._pool).release(connection)
