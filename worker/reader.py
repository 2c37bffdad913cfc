"""One consumer group at work: read every stream, run the handler, acknowledge, retry,
recover, dead-letter.

Per consumer there is one queue of entries to handle, fed by a reader per stream (new
entries), the retry timer (failed entries due again) and recovery (entries taken over
from dead workers). `concurrency` lanes drain the queue; finished entries are
acknowledged in batches by one acker. Everything per entry is plain attribute access and
list appends: the per-entry cost is what bounds throughput for light handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.typing import FilteringBoundLogger

from shared.connections import REDIS_DOWN
from shared.entries import StreamEntry
from shared.events import DecodeFailure, Event, UnknownEvent, decode_event
from shared.keys import Keys
from shared.logs import error_text, get_logger
from shared.redis_values import as_text, now_ms, parse_stream_id
from shared.replicas import NotReplicated, confirm, wait_of
from shared.settings import Settings
from shared.tasks import cancel_and_wait
from shared.tracing import tracer

from . import recovery
from .consumers import BatchHandler, Consumer, ConsumerOptions, Context
from .dlq import DeadLetter, dead_letter
from .heartbeat import alive
from .metrics import ConsumerStats
from .retry import backoff_s

__all__ = ["GroupReader"]

_NOT_EVENTS = (DecodeFailure, UnknownEvent)
T = TypeVar("T")
# Reconnection backoff: first retry soon, then no more than one attempt every 5 s.
_RECONNECT_BASE_S, _RECONNECT_MAX_S = 0.1, 5.0
_RECANCEL_S = 0.5
# A handler that failed on these failed because Redis was away (down, failing over, or
# not confirming RTT_STORE_REPLICAS), not because of its entry: the delivery is not
# counted towards RTT_MAX_DELIVERIES. redis-py's own errors only: a consumer's OSError
# may be any destination's.
_REDIS_AWAY = (
    RedisConnectionError,
    RedisTimeoutError,
    NotReplicated,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
)


def redis_away(exc: BaseException) -> bool:
    """Whether `exc`, or what it was raised from, says Redis was away."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, _REDIS_AWAY):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


class Item(msgspec.Struct, frozen=True, gc=False):
    """An entry to handle, as it waits on the queue and while a lane runs it.

    A msgspec Struct: one is built per entry, at a fifth of a NamedTuple's cost. Not
    tracked by the garbage collector: it holds no reference back to itself.
    """

    stream: str
    entry_id: bytes
    fields: dict[bytes, bytes]
    deliveries: int  # including this one


class _Retry(msgspec.Struct, frozen=True, order=True):
    """A failed entry waiting for its next delivery; the retry heap orders by `due`."""

    due: float  # time.monotonic()
    seq: int  # ties in `due` go first come, first served (entry ids do not compare)
    stream: str
    entry_id: bytes
    deliveries: int  # so far


class _EntryLog:
    """The handler's logger, bound to the entry only when the handler logs: binding costs
    more than a no-op handler, and most handlers never log."""

    __slots__ = ("_base", "_bound", "_deliveries", "_entry_id", "_event")

    def __init__(
        self, base: FilteringBoundLogger, entry_id: str, event: Event, deliveries: int
    ) -> None:
        self._base = base
        self._entry_id = entry_id
        self._event = event
        self._deliveries = deliveries
        self._bound: FilteringBoundLogger | None = None

    def bound(self) -> FilteringBoundLogger:
        if self._bound is None:
            self._bound = self._base.bind(
                stream_id=self._entry_id,
                call_id=self._event.call_id,
                transcription_id=self._event.transcription_info.id,
                deliveries=self._deliveries,
            )
        return self._bound

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bound(), name)


class GroupReader:
    """Runs one consumer on every event stream, in its own consumer group, until stopped."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        options: ConsumerOptions,
        redis: Redis,
        settings: Settings,
        keys: Keys,
        worker_id: str,
        stats: ConsumerStats,
    ) -> None:
        self.consumer = consumer
        self.options = options
        self.group = consumer.name
        self.redis = redis
        self.settings = settings
        # On a cluster WAIT would have to go to each stream's node: acks are not waited for.
        self._wait = None if isinstance(redis, RedisCluster) else wait_of(settings)
        self.keys = keys
        self.worker_id = worker_id
        self.stats = stats
        self.streams = keys.event_streams()
        # A logger per reader, built now: a module-level one would keep the logging set-up
        # of whenever it was first used.
        self.log = get_logger().bind(consumer=self.group, worker_id=worker_id)
        self._group_b = self.group.encode()
        self._wanted = (
            None
            if consumer.event_types is None
            else frozenset(t.encode() for t in consumer.event_types)
        )
        self._batch = settings.batch_size
        self._block_ms = max(1, int(settings.block.total_seconds() * 1000))
        self._max_deliveries = options.max_deliveries
        self._concurrency = options.concurrency
        self._timeout_s = options.timeout_s
        self._start_id = "$" if options.start == "new" else "0"
        self._retry_base_s = settings.retry_base.total_seconds()
        # A live worker's pending entries are taken by others only after claim_idle; a
        # retry waiting longer than that would be taken from under it, so cap the delay.
        self._retry_max_s = min(settings.retry_max.total_seconds(), self._claim_idle_s() / 2)
        self._heartbeat_s = settings.heartbeat_interval.total_seconds()
        self._ttl_ms = int(settings.heartbeat_ttl.total_seconds() * 1000)

        self._queue: deque[Item] = deque()
        self._idle_lanes: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # lanes woken that have not run yet
        self._current: list[Item | None] = [None] * options.concurrency
        # A batch consumer's lanes each hold a batch instead.
        self._current_batch: list[list[Item]] = [[] for _ in range(options.concurrency)]
        self._in_batches = 0  # entries in the calls of a batch consumer, which count as held
        # Per lane, while its handler runs: when it is due to end (perf_counter), and how
        # often the watchdog has cancelled it for running late.
        self._deadlines = [0.0] * options.concurrency
        self._timeouts_sent = [0] * options.concurrency
        self._space = asyncio.Event()
        self._space_wanted = False
        self._acks: dict[str, list[bytes]] = {stream: [] for stream in self.streams}
        self._acking: dict[str, list[bytes]] = {}  # the XACK batch in flight
        self._ack_wanted = asyncio.Event()
        # Entries off the queue whose outcome is being written (dead letter, claim again).
        self._settling: set[tuple[str, bytes]] = set()
        # Entries whose handler failed because Redis was away: how many times in a row.
        self._away: dict[tuple[str, bytes], int] = {}
        # When Redis last failed this reader: a reply lost then may have delivered entries
        # to it that it never saw (see _recover_unread).
        self._failed_at: float | None = None
        self._reading: set[str] = set()  # streams past the first take-over of own entries
        self._retries: list[_Retry] = []
        self._retry_seq = itertools.count()
        self._retry_wanted = asyncio.Event()
        self._last_read: dict[str, bytes] = {}
        self._recreating: dict[str, asyncio.Lock] = {s: asyncio.Lock() for s in self.streams}
        self._lanes: list[asyncio.Task[None]] = []
        self._closing = False
        self._lanes_done = False
        self._stop = asyncio.Event()
        self._force = False

    def _claim_idle_s(self) -> float:
        return self.settings.claim_idle.total_seconds()

    # --- lifecycle ----------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop reading; in-flight handlers get the grace period (none when `force`)."""
        self._force = self._force or force
        self._stop.set()
        if force:
            for task in self._lanes:
                task.cancel()

    async def run(self) -> None:
        """Until `stop()`: then in-flight handlers finish within the grace period, finished
        entries are acknowledged, and everything else stays pending for other workers."""
        batch_handle = self.consumer.handle_batch
        self._lanes = [
            asyncio.create_task(
                self._lane(i) if batch_handle is None else self._batch_lane(i, batch_handle),
                name=f"{self.group}-lane-{i}",
            )
            for i in range(self._concurrency)
        ]
        watchdog = asyncio.create_task(self._watchdog(), name=f"{self.group}-watchdog")
        acker = asyncio.create_task(self._ack_loop(), name=f"{self.group}-acker")
        feeders = [
            asyncio.create_task(self._read_loop(stream), name=f"{self.group}-read-{stream}")
            for stream in self.streams
        ]
        feeders.append(asyncio.create_task(self._retry_loop(), name=f"{self.group}-retry"))
        feeders.append(asyncio.create_task(self._recovery_loop(), name=f"{self.group}-recover"))
        stop_wait = asyncio.create_task(self._stop.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait(
                [stop_wait, acker, watchdog, *feeders, *self._lanes],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                if task is not stop_wait and not task.cancelled():
                    failure = task.exception() or RuntimeError(f"{task.get_name()} ended")
                    self.log.error(
                        "reader_task_failed", task=task.get_name(), error=error_text(failure)
                    )
        finally:
            stop_wait.cancel()
            await self._shutdown(feeders, acker, watchdog)
        if failure is not None:
            raise failure

    async def _shutdown(
        self,
        feeders: list[asyncio.Task[None]],
        acker: asyncio.Task[None],
        watchdog: asyncio.Task[None],
    ) -> None:
        await cancel_and_wait(feeders)
        # Lanes finish the entry in hand and take no other: what is queued stays pending.
        self._closing = True
        self._wake_all()
        grace_s = 0.0 if self._force else self.settings.shutdown_timeout.total_seconds()
        in_flight = sum(item is not None for item in self._current)
        in_flight += sum(len(batch) for batch in self._current_batch)
        self.log.info("consumer_stopping", in_flight=in_flight, grace_s=grace_s)
        late = {task for task in self._lanes if not task.done()}
        if late and grace_s > 0:
            _, late = await asyncio.wait(late, timeout=grace_s)
        cancelled = sum(
            (item is not None) + len(batch)
            for task, item, batch in zip(
                self._lanes, self._current, self._current_batch, strict=True
            )
            if task in late
        )
        await cancel_and_wait(late)
        await cancel_and_wait([watchdog])
        left = len(self._queue) + len(self._retries) + cancelled
        self._lanes_done = True
        self._ack_wanted.set()
        _, unfinished = await asyncio.wait([acker], timeout=max(grace_s, 5.0))
        if unfinished:
            self.log.error("final_ack_timed_out", unacknowledged=self._ack_count())
            await cancel_and_wait(unfinished)
        self.log.info(
            "consumer_stopped",
            in_flight_at_stop=in_flight,
            cancelled=cancelled,
            left_pending=left,
        )

    # --- lanes: run the handler ---------------------------------------------------------

    def _push(self, items: list[Item]) -> None:
        self._queue.extend(items)
        self._wake_lane()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until `_wake_lane` hands this lane work."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._idle_lanes.append(waiter)
        await waiter
        self._waking = max(0, self._waking - 1)

    def _wake_lane(self) -> None:
        # Wake one lane at a time: a lane that takes an entry wakes the next, so a burst
        # of entries fans out to as many lanes as have work, and light handlers that never
        # yield leave the other lanes asleep instead of waking them all for nothing.
        if self._waking:
            return
        while self._idle_lanes:
            waiter = self._idle_lanes.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return

    def _wake_all(self) -> None:
        while self._idle_lanes:
            waiter = self._idle_lanes.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def _lane(self, index: int) -> None:
        """Take entries off the queue and handle them, one at a time, until closing.

        The common path (decode, build the context, await the handler, queue the ack) is
        written out here rather than in helper calls: at 100k entries a second, every call
        and attribute lookup per entry shows in the throughput.
        """
        queue, current, acks = self._queue, self._current, self._acks
        ack_wanted, stats = self._ack_wanted, self.stats
        latency = stats.latency_s
        bounds, counts = latency.bounds, latency.counts
        loop = asyncio.get_running_loop()
        high = self._batch
        group, group_b, wanted = self.group, self._group_b, self._wanted
        max_deliveries = self._max_deliveries
        handle, base_log = self.consumer.handle, self.log
        redis, keys, prefix, worker_id = self.redis, self.keys, self.keys.prefix, self.worker_id
        options, deadlines, timeouts_sent = self.options, self._deadlines, self._timeouts_sent
        timeout_s = self._timeout_s
        traced = tracer().enabled
        perf_counter = time.perf_counter
        me = asyncio.current_task()
        assert me is not None
        while True:
            if self._closing:
                return
            if not queue:
                await self._idle(loop)
                continue
            item = queue.popleft()
            if queue and not self._waking and self._idle_lanes:
                self._wake_lane()
            if self._space_wanted and len(queue) <= high:
                self._space_wanted = False
                self._space.set()
            stream, entry_id = item.stream, item.entry_id
            fields, deliveries = item.fields, item.deliveries
            only = fields.get(b"group")
            if (only is not None and only != group_b) or (
                wanted is not None and fields.get(b"type") not in wanted
            ):
                stats.skipped += 1
            else:
                event = decode_event(fields.get(b"body", b""))
                if isinstance(event, _NOT_EVENTS) or deliveries > max_deliveries:
                    current[index] = item
                    try:
                        await self._not_handled(item, event)
                    finally:
                        current[index] = None
                    continue
                entry_text = entry_id.decode()
                ctx = Context(
                    _EntryLog(base_log, entry_text, event, deliveries),
                    redis,
                    keys,
                    prefix,
                    group,
                    worker_id,
                    options,
                    deliveries,
                    entry_text,
                    stream,
                    int(fields.get(b"received_at") or 0),
                )
                current[index] = item
                started = perf_counter()
                deadlines[index] = started + timeout_s
                failure: BaseException | None = None
                try:
                    if traced:
                        await self._handle_traced(event, ctx, fields)
                    else:
                        await handle(event, ctx)
                except Exception as exc:
                    failure = exc
                except asyncio.CancelledError:
                    if me.cancelling() > timeouts_sent[index]:
                        raise  # stopping
                    # Raised by the handler itself (a library's timeout), or by the watchdog.
                    failure = asyncio.CancelledError("raised by the handler")
                deadlines[index] = 0.0
                timed_out = timeouts_sent[index] > 0
                if timed_out:
                    failure = self._timed_out(me, index)
                elapsed = perf_counter() - started
                counts[bisect_left(bounds, elapsed)] += 1
                latency.total += elapsed
                current[index] = None
                if failure is not None:
                    await self._failed(item, failure, ctx.log, timed_out=timed_out)
                    continue
                stats.processed += 1
                if deliveries > 1:
                    stats.redeliveries.observe(deliveries)
                if self._away:
                    self._away.pop((stream, entry_id), None)
            acks[stream].append(entry_id)
            if not ack_wanted.is_set():
                ack_wanted.set()

    async def _batch_lane(self, index: int, handle_batch: BatchHandler) -> None:
        """For a batch consumer: take what is queued (a read's worth at most) and hand it
        to one call; each event's outcome is then acknowledged, retried or dead-lettered
        on its own. A raise, or the timeout, fails every event of the call."""
        queue, current, loop = self._queue, self._current_batch, asyncio.get_running_loop()
        stats, latency = self.stats, self.stats.latency_s
        group_b, wanted, limit = self._group_b, self._wanted, self._batch
        deadlines, timeouts_sent = self._deadlines, self._timeouts_sent
        me = asyncio.current_task()
        assert me is not None
        while not self._closing:
            if not queue:
                await self._idle(loop)
                continue
            taken = [queue.popleft() for _ in range(min(limit, len(queue)))]
            if queue and not self._waking and self._idle_lanes:
                self._wake_lane()
            if self._space_wanted and len(queue) + self._in_batches <= limit:
                self._space_wanted = False
                self._space.set()
            items: list[Item] = []
            events: list[Event] = []
            ctxs: list[Context] = []
            for item in taken:
                fields = item.fields
                only = fields.get(b"group")
                if (only is not None and only != group_b) or (
                    wanted is not None and fields.get(b"type") not in wanted
                ):
                    stats.skipped += 1
                    self._ack(item.stream, item.entry_id)
                    continue
                event = decode_event(fields.get(b"body", b""))
                if isinstance(event, _NOT_EVENTS) or item.deliveries > self._max_deliveries:
                    current[index] = [item]
                    try:
                        await self._not_handled(item, event)
                    finally:
                        current[index] = []
                    continue
                items.append(item)
                events.append(event)
                ctxs.append(self._context(item, event))
            if not items:
                continue
            current[index] = items
            self._in_batches += len(items)
            started = time.perf_counter()
            deadlines[index] = started + self._timeout_s
            outcomes: Sequence[BaseException | None] | None
            try:
                if tracer().enabled:
                    outcomes = await self._handle_batch_traced(handle_batch, events, ctxs, items)
                else:
                    outcomes = await handle_batch(events, ctxs)
                if outcomes is not None and len(outcomes) != len(items):
                    outcomes = [
                        ValueError(
                            f"batch handler returned {len(outcomes)} outcomes "
                            f"for {len(items)} events"
                        )
                    ] * len(items)
            except Exception as exc:
                outcomes = [exc] * len(items)
            except asyncio.CancelledError:
                if me.cancelling() > timeouts_sent[index]:
                    raise  # stopping
                outcomes = [asyncio.CancelledError("raised by the handler")] * len(items)
            deadlines[index] = 0.0
            timed_out = timeouts_sent[index] > 0
            if timed_out:
                outcomes = [self._timed_out(me, index)] * len(items)
            elapsed = time.perf_counter() - started
            latency.counts[bisect_left(latency.bounds, elapsed)] += len(items)
            latency.total += elapsed * len(items)
            current[index] = []
            self._in_batches -= len(items)
            if self._space_wanted and len(queue) + self._in_batches <= limit:
                self._space_wanted = False
                self._space.set()
            # A failure may await (a dead letter is written): the events after it wait for
            # their outcome meanwhile, and are settling (see _recover_unread).
            settling = (
                set()
                if outcomes is None or not any(outcomes)
                else {(item.stream, item.entry_id) for item in items}
            )
            self._settling |= settling
            for n, item in enumerate(items):
                failure = None if outcomes is None else outcomes[n]
                if failure is not None:
                    await self._failed(item, failure, ctxs[n].log, timed_out=timed_out)
                    continue
                stats.processed += 1
                if item.deliveries > 1:
                    stats.redeliveries.observe(item.deliveries)
                if self._away:
                    self._away.pop((item.stream, item.entry_id), None)
                self._ack(item.stream, item.entry_id)
            self._settling -= settling

    def _context(self, item: Item, event: Event) -> Context:
        entry_text = item.entry_id.decode()
        return Context(
            _EntryLog(self.log, entry_text, event, item.deliveries),
            self.redis,
            self.keys,
            self.keys.prefix,
            self.group,
            self.worker_id,
            self.options,
            item.deliveries,
            entry_text,
            item.stream,
            int(item.fields.get(b"received_at") or 0),
        )

    async def _handle_batch_traced(
        self,
        handle_batch: BatchHandler,
        events: list[Event],
        ctxs: list[Context],
        items: list[Item],
    ) -> Sequence[BaseException | None] | None:
        """One span per entry, as for a per-event consumer, all around the one call."""
        with contextlib.ExitStack() as stack:
            spans = [
                stack.enter_context(
                    tracer().handle(
                        item.fields.get(b"traceparent", b"").decode(errors="replace"),
                        consumer=self.group,
                        stream=ctx.stream,
                        entry_id=ctx.entry_id,
                        deliveries=ctx.deliveries,
                    )
                )
                for item, ctx in zip(items, ctxs, strict=True)
            ]
            try:
                outcomes = await handle_batch(events, ctxs)
            except BaseException:
                for span in spans:
                    span.set_attribute("rtt.outcome", "failed")
                raise
            for n, span in enumerate(spans):
                failed = outcomes is not None and n < len(outcomes) and outcomes[n] is not None
                span.set_attribute("rtt.outcome", "failed" if failed else "handled")
            return outcomes

    async def _handle_traced(self, event: Event, ctx: Context, fields: dict[bytes, bytes]) -> None:
        """The handler call in a span, child of the receiver's span the entry carries."""
        with tracer().handle(
            fields.get(b"traceparent", b"").decode(errors="replace"),
            consumer=self.group,
            stream=ctx.stream,
            entry_id=ctx.entry_id,
            deliveries=ctx.deliveries,
        ) as span:
            try:
                await self.consumer.handle(event, ctx)
            except BaseException:
                span.set_attribute("rtt.outcome", "failed")
                raise
            span.set_attribute("rtt.outcome", "handled")

    def _timed_out(self, me: asyncio.Task[None], index: int) -> TimeoutError:
        """The watchdog's cancellations of this lane are spent: the call is a failure."""
        for _ in range(self._timeouts_sent[index]):
            me.uncancel()
        self._timeouts_sent[index] = 0
        if me.cancelling():
            raise asyncio.CancelledError  # a stop came as well
        return TimeoutError(f"handler still running after its timeout of {self._timeout_s:g}s")

    async def _watchdog(self) -> None:
        """Cancel handler calls that outlive the consumer's timeout, so a hung call does not
        hold its lane forever. One timer per consumer instead of one per call: a per-call
        `asyncio.timeout` costs a timer handle for every entry, at any throughput.

        A cancellation may be swallowed (by the handler, or by `asyncio.wait_for` on 3.11,
        gh-86296): a call still running is cancelled again every `_RECANCEL_S`.
        """
        deadlines, sent = self._deadlines, self._timeouts_sent
        lanes, timeout_s = self._lanes, self._timeout_s
        while True:
            now = time.perf_counter()
            wake = now + timeout_s  # a call starting from now on ends no sooner
            for index, deadline in enumerate(deadlines):
                if not deadline:
                    continue
                due = deadline + _RECANCEL_S * sent[index]
                if due <= now:
                    sent[index] += 1
                    lanes[index].cancel()
                    due += _RECANCEL_S
                wake = min(wake, due)
            await asyncio.sleep(wake - now)

    async def _not_handled(self, item: Item, event: Event | DecodeFailure | UnknownEvent) -> None:
        if isinstance(event, DecodeFailure | UnknownEvent):
            await self._undecodable(item, event)
        else:
            # Delivered that often without an outcome: workers died or stalled on it.
            await self._give_up(item, f"no outcome after {item.deliveries - 1} deliveries")

    async def _undecodable(self, item: Item, event: DecodeFailure | UnknownEvent) -> None:
        stream, entry_id = item.stream, item.entry_id
        if isinstance(event, UnknownEvent):
            # Written by a newer receiver that knows more event types: not ours to handle.
            self.log.warning(
                "entry_type_unknown",
                stream=stream,
                stream_id=entry_id.decode(),
                event_type=event.event_type,
            )
            self._ack(stream, entry_id)
            self.stats.skipped += 1
            return
        await self._give_up(item, f"undecodable body: {event.error} at {event.path}")

    async def _failed(
        self, item: Item, exc: BaseException, entry_log: Any, *, timed_out: bool
    ) -> None:
        deliveries = item.deliveries
        self.stats.failed += 1
        if not timed_out and redis_away(exc):
            await self._failed_while_redis_away(item, exc, entry_log)
            return
        if self._away:
            self._away.pop((item.stream, item.entry_id), None)
        if deliveries >= self._max_deliveries:
            entry_log.error(
                "handler_failed",
                error=error_text(exc),
                exc_info=exc,
                timed_out=timed_out,
                redis_away=False,
                final=True,
            )
            await self._give_up(item, error_text(exc))
            return
        delay_s = backoff_s(deliveries, self._retry_base_s, self._retry_max_s)
        entry_log.warning(
            "handler_failed",
            error=error_text(exc),
            exc_info=exc,
            timed_out=timed_out,
            redis_away=False,
            retry_in_s=round(delay_s, 3),
        )
        self._schedule_retry(item.stream, item.entry_id, deliveries, delay_s)
        self.stats.retried += 1

    async def _failed_while_redis_away(
        self, item: Item, exc: BaseException, entry_log: Any
    ) -> None:
        """Redis was away, nothing about the entry failed: the next delivery carries this
        one's number again, so no outage, however long, dead-letters it. Its retries back
        off as reconnecting does (to 5 s at most), and only the first has a traceback."""
        key = (item.stream, item.entry_id)
        attempt = self._away[key] = self._away.get(key, 0) + 1
        cap_s = max(self._retry_base_s, min(self._retry_max_s, _RECONNECT_MAX_S))
        delay_s = backoff_s(attempt, self._retry_base_s, cap_s)
        entry_log.warning(
            "handler_failed",
            error=error_text(exc),
            exc_info=exc if attempt == 1 else None,
            timed_out=False,
            redis_away=True,
            attempt=attempt,
            retry_in_s=round(delay_s, 3),
        )
        self._schedule_retry(item.stream, item.entry_id, item.deliveries - 1, delay_s)
        self.stats.retried += 1

    def _schedule_retry(
        self, stream: str, entry_id: bytes, deliveries: int, delay_s: float
    ) -> None:
        due = time.monotonic() + delay_s
        retry = _Retry(due, next(self._retry_seq), stream, entry_id, deliveries)
        heapq.heappush(self._retries, retry)
        self._retry_wanted.set()

    async def _give_up(self, item: Item, error: str) -> None:
        stream, entry_id, deliveries = item.stream, item.entry_id, item.deliveries
        letter = DeadLetter(
            stream=stream,
            original_id=entry_id.decode(),
            group=self.group,
            worker_id=self.worker_id,
            error=error,
            attempts=deliveries,
            entry=StreamEntry.from_fields(item.fields),
            failed_at_ms=now_ms(),
        )
        self._settling.add((stream, entry_id))
        try:
            await dead_letter(self.redis, self.keys.dlq, letter, self.settings.dlq_max_len)
        except (*REDIS_DOWN, ResponseError) as exc:
            # Still pending: it comes back as a retry and is dead-lettered then.
            self.log.error(
                "dead_letter_failed",
                stream=stream,
                stream_id=letter.original_id,
                error=error_text(exc),
            )
            self._failed_at = time.monotonic()
            self._schedule_retry(stream, entry_id, deliveries, self._retry_base_s)
            return
        finally:
            self._settling.discard((stream, entry_id))
        self.stats.dead_lettered += 1
        if deliveries > 1:
            self.stats.redeliveries.observe(deliveries)
        self.log.error(
            "entry_dead_lettered",
            stream=stream,
            stream_id=letter.original_id,
            attempts=deliveries,
            error=error,
        )

    # --- acknowledgements ---------------------------------------------------------------

    def _ack(self, stream: str, entry_id: bytes) -> None:
        self._acks[stream].append(entry_id)
        if not self._ack_wanted.is_set():
            self._ack_wanted.set()

    def _ack_count(self) -> int:
        return sum(len(ids) for ids in self._acks.values())

    async def _ack_loop(self) -> None:
        """Acknowledge in batches: whatever finished while the last XACK was in flight."""
        failures = 0
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            batch = {stream: ids for stream, ids in self._acks.items() if ids}
            if batch:
                for stream in batch:
                    self._acks[stream] = []
                self._acking = batch
                try:
                    await self._send_acks(batch)
                    failures = 0
                    self._acking = {}
                except (*REDIS_DOWN, ResponseError, NotReplicated) as exc:
                    for stream, ids in batch.items():
                        self._acks[stream][:0] = ids
                    self._acking = {}
                    failures += 1
                    await self._redis_down("ack", exc, failures)
                    self._ack_wanted.set()
                    continue
            if self._lanes_done and not self._ack_count():
                return

    async def _send_acks(self, batch: dict[str, list[bytes]]) -> None:
        wait = self._wait
        if wait is not None:
            # RTT_STORE_REPLICAS: the acknowledgements count once replicas have them, or a
            # failover leaves their entries pending; else they are sent again (XACK again
            # is harmless).
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, ids in batch.items():
                    pipe.xack(stream, self.group, *ids)
                pipe.execute_command(*wait.command())
                *_, confirmed = await pipe.execute()
            confirm(confirmed, wait, "acknowledgements")
            return
        if len(batch) == 1:
            [(stream, ids)] = batch.items()
            await self.redis.xack(stream, self.group, *ids)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in batch.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    # --- feeding the queue --------------------------------------------------------------

    async def _wait_for_space(self) -> None:
        """Read ahead by one batch at most: the next batch is on its way while this one is
        handled, and a worker never holds more than it can start on soon. A batch
        consumer's calls take the whole queue, so what they hold counts as queued: other
        workers get their share of a backlog."""
        while len(self._queue) + self._in_batches > self._batch:
            self._space.clear()
            self._space_wanted = True
            await self._space.wait()

    async def _redis_down(self, operation: str, exc: BaseException, failures: int) -> None:
        self._failed_at = time.monotonic()
        delay_s = backoff_s(failures, _RECONNECT_BASE_S, _RECONNECT_MAX_S)
        self.log.warning(
            "redis_unavailable",
            operation=operation,
            error=error_text(exc),
            attempt=failures,
            retry_in_s=round(delay_s, 3),
        )
        await asyncio.sleep(delay_s)

    async def _retrying(self, operation: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make()` until Redis answers, backing off while it does not."""
        failures = 0
        while True:
            try:
                return await make()
            except (*REDIS_DOWN, ResponseError) as exc:
                if isinstance(exc, ResponseError) and _is_nogroup(exc):
                    raise
                failures += 1
                await self._redis_down(operation, exc, failures)

    async def _read_loop(self, stream: str) -> None:
        while True:
            created = await self._retrying(
                "create_group",
                lambda: recovery.create_group(self.redis, stream, self.group, self._start_id),
            )
            if created:
                self.log.info("consumer_group_created", stream=stream, start=self.options.start)
            try:
                # A restart under a stable worker id first finishes what it held before.
                await self._take_over(stream, self.worker_id, reason="own_pending", min_idle_ms=0)
                self._reading.add(stream)
                break
            except ResponseError as exc:  # NOGROUP: gone again since; create it again
                self.log.warning("consumer_group_vanished", stream=stream, error=error_text(exc))
        failures = 0
        while True:
            await self._wait_for_space()
            try:
                reply: Any = await self.redis.xreadgroup(
                    self.group,
                    self.worker_id,
                    {stream: ">"},
                    count=self._batch,
                    block=self._block_ms,
                )
            except ResponseError as exc:
                if _is_nogroup(exc):
                    await self._recreate_group(stream, str(exc))
                    continue
                # READONLY during a failover, OOM...: the same patience as for a down Redis.
                failures += 1
                await self._redis_down("read", exc, failures)
                continue
            except REDIS_DOWN as exc:
                failures += 1
                await self._redis_down("read", exc, failures)
                continue
            failures = 0
            if reply:
                entries = reply[0][1]
                self._last_read[stream] = entries[-1][0]
                self._queue.extend([Item(stream, eid, fields, 1) for eid, fields in entries])
                self._wake_lane()

    async def _recreate_group(self, stream: str, reason: str) -> None:
        """The group is gone (Redis restarted empty, or someone destroyed it): create it
        again where this worker stopped reading, so nothing after that is skipped."""
        async with self._recreating[stream]:
            held = self._held_ids(stream)
            start: bytes | str = self._last_read.get(stream, b"0-0")
            if held:
                start = min(
                    [recovery.before(min(held, key=parse_stream_id)), as_text(start)],
                    key=parse_stream_id,
                )
            start_text = as_text(start)
            created = await self._retrying(
                "create_group",
                lambda: recovery.create_group(self.redis, stream, self.group, start_text),
            )
            # What we hold of that stream comes back through the new group.
            kept = [item for item in self._queue if item.stream != stream]
            self._queue.clear()
            self._queue.extend(kept)
            self._space.set()
            self._retries = [r for r in self._retries if r.stream != stream]
            heapq.heapify(self._retries)
            self.log.error(
                "consumer_group_recreated",
                stream=stream,
                start_id=start_text,
                created_here=created,
                reason=reason,
            )

    def _held_ids(self, stream: str) -> set[bytes]:
        held = {item.entry_id for item in self._queue if item.stream == stream}
        held.update(
            item.entry_id for item in self._current if item is not None and item.stream == stream
        )
        held.update(
            item.entry_id
            for batch in self._current_batch
            for item in batch
            if item.stream == stream
        )
        held.update(r.entry_id for r in self._retries if r.stream == stream)
        return held

    async def _retry_loop(self) -> None:
        while True:
            if not self._retries:
                self._retry_wanted.clear()
                await self._retry_wanted.wait()
                continue
            wait_s = self._retries[0].due - time.monotonic()
            if wait_s > 0:
                self._retry_wanted.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._retry_wanted.wait()
                continue
            due: dict[str, dict[bytes, int]] = {}
            now = time.monotonic()
            for _ in range(self._batch):
                if not self._retries or self._retries[0].due > now:
                    break
                retry = heapq.heappop(self._retries)
                due.setdefault(retry.stream, {})[retry.entry_id] = retry.deliveries
            for stream, counts in due.items():
                await self._redeliver(stream, counts)

    async def _redeliver(self, stream: str, counts: dict[bytes, int]) -> None:
        """Claim the due entries again for this worker, setting the delivery count Redis
        keeps to the one this delivery carries (a retry after Redis was away keeps its
        number), so a worker taking them over later counts as this one did."""
        settling = {(stream, entry_id) for entry_id in counts}
        self._settling |= settling
        by_count: dict[int, list[bytes]] = {}
        for entry_id, deliveries in counts.items():
            by_count.setdefault(deliveries + 1, []).append(entry_id)
        try:
            rows = [
                row
                for deliveries, ids in by_count.items()
                for row in await recovery.claim(
                    self.redis, stream, self.group, self.worker_id, ids, 0, deliveries
                )
            ]
        except ResponseError as exc:
            if _is_nogroup(exc):
                await self._recreate_group(stream, str(exc))
                return
            self._failed_at = time.monotonic()
            self.log.warning("redis_unavailable", operation="retry", error=error_text(exc))
            for entry_id, deliveries in counts.items():
                self._schedule_retry(stream, entry_id, deliveries, _RECONNECT_MAX_S)
            return
        except REDIS_DOWN as exc:
            self._failed_at = time.monotonic()
            self.log.warning("redis_unavailable", operation="retry", error=error_text(exc))
            for entry_id, deliveries in counts.items():
                self._schedule_retry(stream, entry_id, deliveries, _RECONNECT_MAX_S)
            return
        finally:
            self._settling -= settling
        self._push([Item(stream, eid, fields, counts[eid] + 1) for eid, fields in rows])

    # --- recovery -----------------------------------------------------------------------

    async def _take_over(self, stream: str, member: str, *, reason: str, min_idle_ms: int) -> int:
        """Claim every pending entry of `member` for this worker, a batch at a time."""
        taken = 0
        start = "-"
        while True:
            await self._wait_for_space()
            page = await self._retrying("pending", self._pending_page(stream, member, start))
            if not page:
                break
            counts = {p.entry_id: p.deliveries for p in page}
            rows = await self._retrying("claim", self._claimer(stream, list(counts), min_idle_ms))
            self._push([Item(stream, eid, fields, counts[eid] + 1) for eid, fields in rows])
            taken += len(rows)
            start = "(" + page[-1].entry_id.decode()
        if taken:
            self.log.warning(
                "pending_taken_over",
                stream=stream,
                from_worker=member,
                entries=taken,
                reason=reason,
            )
        return taken

    def _pending_page(
        self, stream: str, member: str, start: str
    ) -> Callable[[], Awaitable[list[recovery.Pending]]]:
        return lambda: recovery.pending_of(
            self.redis, stream, self.group, member, self._batch, start
        )

    def _claimer(
        self, stream: str, ids: list[bytes], min_idle_ms: int
    ) -> Callable[[], Awaitable[list[recovery.RawEntry]]]:
        return lambda: recovery.claim(
            self.redis, stream, self.group, self.worker_id, ids, min_idle_ms
        )

    async def _recovery_loop(self) -> None:
        """Take over the entries of dead members; after claim_idle, those of anyone."""
        idle_sweep_s = max(self._heartbeat_s, self._claim_idle_s() / 4)
        next_idle_sweep = time.monotonic() + idle_sweep_s
        failures = 0
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                for stream in self.streams:
                    await self._recover_dead(stream)
                if time.monotonic() >= next_idle_sweep:
                    next_idle_sweep = time.monotonic() + idle_sweep_s
                    for stream in self.streams:
                        await self._recover_idle(stream)
                await self._recover_unread()
                failures = 0
            except ResponseError as exc:
                # NOGROUP: the reader notices it too and re-creates the group.
                if not _is_nogroup(exc):
                    failures += 1
                    await self._redis_down("recover", exc, failures)
            except REDIS_DOWN as exc:
                failures += 1
                await self._redis_down("recover", exc, failures)

    async def _recover_dead(self, stream: str) -> None:
        others = [
            m
            for m in await recovery.members(self.redis, stream, self.group)
            if m.name != self.worker_id
        ]
        if not others:
            return
        living = await alive(self.redis, self.keys, self.group, (m.name for m in others))
        self.log.debug(
            "members_checked",
            stream=stream,
            alive=sum(living.values()),
            dead=[m.name for m in others if not living[m.name]],
        )
        for member in others:
            if living[member.name]:
                continue
            if member.pending:
                # Two workers may see the same death: once one has claimed an entry, its
                # idle time is reset and the other's claim (min idle > 0) leaves it alone.
                await self._take_over(
                    stream,
                    member.name,
                    reason="worker_dead",
                    min_idle_ms=int(self._heartbeat_s * 1000),
                )
            elif member.idle_ms > self._ttl_ms and await recovery.remove_member(
                self.redis, stream, self.group, member.name
            ):
                self.log.info("worker_removed_from_group", stream=stream, member=member.name)

    async def _recover_unread(self) -> None:
        """After a Redis failure: take back what Redis delivered to this worker in a reply
        that never arrived (Redis stopped, or the connection dropped, after serving an
        XREADGROUP or XCLAIM). Redis counts those entries as this live worker's, so no
        other worker takes them before RTT_CLAIM_IDLE. Once RTT_HEARTBEAT_TTL has passed
        since the failure, each is idle at least that long; entries claimed or read since
        are younger, and XCLAIM's minimum idle time leaves them alone."""
        failed_at = self._failed_at
        if failed_at is None or time.monotonic() - failed_at < self._ttl_ms / 1000:
            return
        if not self._reading.issuperset(self.streams):
            return  # the first take-over of own entries is still running
        for stream in self.streams:
            await self._take_unheld(stream)
        if self._failed_at == failed_at:
            self._failed_at = None

    async def _take_unheld(self, stream: str) -> None:
        taken = 0
        start = "-"
        while True:
            await self._wait_for_space()
            page = await recovery.pending_of(
                self.redis, stream, self.group, self.worker_id, self._batch, start
            )
            if not page:
                break
            start = "(" + page[-1].entry_id.decode()
            known = self._known_ids(stream)
            counts = {p.entry_id: p.deliveries for p in page if p.entry_id not in known}
            if not counts:
                continue
            rows = await recovery.claim(
                self.redis, stream, self.group, self.worker_id, list(counts), self._ttl_ms
            )
            known = self._known_ids(stream)
            items = [Item(stream, e, f, counts[e] + 1) for e, f in rows if e not in known]
            self._push(items)
            taken += len(items)
        if taken:
            self.log.warning(
                "pending_taken_over",
                stream=stream,
                from_worker=self.worker_id,
                entries=taken,
                reason="reply_lost",
            )

    def _known_ids(self, stream: str) -> set[bytes]:
        """Every entry of `stream` this worker knows it holds, including those handled
        and waiting for (or in) an XACK, and those whose outcome is being written."""
        known = self._held_ids(stream)
        known.update(self._acks.get(stream, ()))
        known.update(self._acking.get(stream, ()))
        known.update(entry_id for s, entry_id in self._settling if s == stream)
        return known

    async def _recover_idle(self, stream: str) -> None:
        """XAUTOCLAIM what nobody touched for claim_idle, even from live workers: a handler
        stuck that long is presumed hung."""
        min_idle_ms = int(self._claim_idle_s() * 1000)
        start = b"0-0"
        for _ in range(100):  # bounded per sweep; the next sweep carries on
            await self._wait_for_space()
            start, rows, deleted = await recovery.autoclaim(
                self.redis, stream, self.group, self.worker_id, min_idle_ms, start, self._batch
            )
            if deleted:
                self.log.error("pending_entries_gone", stream=stream, entries=len(deleted))
            held = self._held_ids(stream)
            fresh = [(eid, fields) for eid, fields in rows if eid not in held]
            if fresh:
                counts = await self._delivery_counts(stream, [eid for eid, _ in fresh])
                self._push([Item(stream, eid, f, counts.get(eid, 2)) for eid, f in fresh])
                self.log.warning(
                    "pending_taken_over", stream=stream, entries=len(fresh), reason="idle"
                )
            if start in (b"0-0", "0-0"):
                return

    async def _delivery_counts(self, stream: str, ids: list[bytes]) -> dict[bytes, int]:
        """Delivery counts of entries just claimed (XAUTOCLAIM does not return them)."""
        lowest, highest = min(ids, key=parse_stream_id), max(ids, key=parse_stream_id)
        rows: Any = await self.redis.xpending_range(
            stream,
            self.group,
            min=lowest,
            max=highest,
            count=len(ids) * 4 + 100,
            consumername=self.worker_id,
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}


def _is_nogroup(exc: ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")
