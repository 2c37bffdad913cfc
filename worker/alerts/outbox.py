"""Deliver the outbox (summaries, rate changes, deferred alerts) to every sink, in order, once.

One worker at a time delivers (a lease in Redis, renewed while it lives, taken over by
another worker when it dies). Each sink has its own cursor in the outbox, so a sink that
is down holds back only itself: its notifications wait, in order, until it answers
again, and a sink's pause (a `429`) is waited out however long. Nothing leaves the
outbox before every sink has it.

A first alert whose sink is paused for longer than a handler waits is deferred here for
that sink: the handler finishes, the entry is acknowledged, and the alert goes out when
the pause ends. It keeps its own once-record (sink, alert key), so a sink that took it
some other way (a retry, a replay) is not sent it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from shared.keys import Keys
from shared.redis_values import as_text, parse_stream_id

from .delivery import SinkError
from .grouping import summary_from_outbox
from .notifications import Notification
from .once import Once
from .options import AlertOptions
from .quiet import quiet_change_from_outbox
from .rate import rate_change_from_outbox
from .rules import Alert
from .sinks import Sink
from .stale import stale_resolved_from_outbox

__all__ = ["Lease", "Outbox"]

_BATCH: Final = 100
_alert_decoder: Final = msgspec.json.Decoder(Alert)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    notification: Notification
    once_key: str  # names the delivery in the once-records
    sinks: frozenset[str] | None  # None: every sink


# KEYS: lease. ARGV: holder token, lease ms. 1 if the caller holds the lease now.
_HOLD: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """Who delivers the outbox: held while renewed, free once its holder stops renewing."""

    def __init__(self, redis: Redis, key: str, ttl_s: float, holder: str) -> None:
        self._key = key
        # Who holds it, for operators (and tests) reading the key; unique per consumer.
        self.token = f"{holder}:{uuid.uuid4().hex[:8]}"
        self._ttl_ms = max(100, int(ttl_s * 1000))
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self.held = False

    async def renew(self) -> bool:
        self.held = bool(await self._hold(keys=[self._key], args=[self.token, self._ttl_ms]))
        return self.held

    async def release(self) -> None:
        self.held = False
        await self._release(keys=[self._key], args=[self.token])


class Outbox:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        options: AlertOptions,
        sinks: Sequence[Sink],
        once: Once,
        lease: Lease,
        log: FilteringBoundLogger,
        *,
        tick_s: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._options = options
        self._sinks = list(sinks)
        self._once = once
        self._lease = lease
        self._log = log
        self._tick_s = tick_s
        self._retry_base_s = max(tick_s, options.retry_base.total_seconds())
        self._retry_max_s = max(self._retry_base_s, options.retry_max.total_seconds())

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> OutboxEntry:
        kind = fields.get(b"kind")
        if kind == b"alert":
            alert = _alert_decoder.decode(fields[b"alert"])
            sinks = frozenset(fields[b"sinks"].decode().split(","))
            return OutboxEntry(alert, alert.alert_key, sinks)
        notification: Notification
        if kind == b"rate":
            notification = rate_change_from_outbox(fields, self._options)
        elif kind == b"quiet":
            notification = quiet_change_from_outbox(fields, self._options)
        elif kind == b"stale_resolved":
            notification = stale_resolved_from_outbox(fields)
        else:
            notification = summary_from_outbox(entry_id, fields)
        return OutboxEntry(notification, f"outbox:{entry_id}", None)

    async def defer(self, alert: Alert, sinks: Collection[str]) -> str:
        """Hand an alert to the outbox for these sinks; returns the outbox entry id."""
        entry_id: Any = await self._redis.xadd(
            self._keys.alert_outbox,
            {"kind": "alert", "alert": msgspec.json.encode(alert), "sinks": ",".join(sinks)},
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            for sink in self._sinks:
                tasks.create_task(self._deliver_forever(sink, stopping))

    async def _deliver_forever(self, sink: Sink, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            pause_s = self._tick_s
            if self._lease.held:
                try:
                    if await self._deliver_some(sink, stopping):
                        pause_s = 0.0
                    failures = 0
                except Exception as exc:
                    failures += 1
                    pause_s = min(self._retry_max_s, self._retry_base_s * 2 ** (failures - 1))
                    expected = isinstance(exc, SinkError | RedisError | TimeoutError)
                    # A sink or Redis being down is expected; anything else is a bug, shown
                    # with its traceback. Either way the entry stays and is tried again.
                    (self._log.warning if expected else self._log.exception)(
                        "alert_outbox_delivery_failed",
                        sink=sink.name,
                        attempts=failures,
                        retry_in_s=pause_s,
                        error=str(exc),
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause_s)

    async def _deliver_some(self, sink: Sink, stopping: asyncio.Event) -> bool:
        """Deliver what follows this sink's cursor; True if there may be more right away."""
        cursor = await self._redis.hget(self._keys.alert_cursors, sink.name)
        start = "(" + (as_text(cursor) if cursor else "0-0")
        entries: Any = await self._redis.xrange(
            self._keys.alert_outbox, min=start, max="+", count=_BATCH
        )
        for raw_id, fields in entries:
            if stopping.is_set() or not self._lease.held:
                return False
            entry_id = raw_id.decode()
            try:
                entry = self.decode(entry_id, fields)
            except (msgspec.ValidationError, msgspec.DecodeError, KeyError, ValueError) as exc:
                self._log.error(
                    "alert_outbox_entry_undecodable",
                    sink=sink.name,
                    outbox_id=entry_id,
                    error=str(exc),
                    fields={k.decode(): v.decode(errors="replace") for k, v in fields.items()},
                )
                await self._redis.hset(self._keys.alert_cursors, sink.name, entry_id)
                continue
            if entry.sinks is None or sink.name in entry.sinks:

                async def send(n: Notification = entry.notification) -> None:
                    await sink.send(n, self._log)

                if await self._once.send(sink.name, entry.once_key, send):
                    kind = fields.get(b"kind", b"").decode()
                    self._log.info(
                        "alert_notification_sent", sink=sink.name, kind=kind, outbox_id=entry_id
                    )
            await self._redis.hset(self._keys.alert_cursors, sink.name, entry_id)
        if entries:
            await self._trim()
        return len(entries) == _BATCH

    async def _trim(self) -> None:
        """Drop what every sink has; a sink without a cursor yet holds everything."""
        names = [sink.name for sink in self._sinks]
        cursors = await self._redis.hmget(self._keys.alert_cursors, names)
        present = [as_text(c) for c in cursors if c is not None]
        if not present or len(present) < len(names):
            return
        lowest = min(present, key=parse_stream_id)
        # MINID keeps ids >= lowest; the entry at `lowest` itself is delivered and harmless.
        await self._redis.xtrim(self._keys.alert_outbox, minid=lowest, approximate=False)
