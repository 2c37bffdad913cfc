"""The store path: where an accepted body goes before the receiver may answer 204.

Redis first, through shared round trips (`batching`). When Redis fails or misses the
deadline, the item goes to the local spool instead, and so does every item after it until
the drainer has moved the whole spool into Redis: a call's events keep their order. The
drainer uses the same script as requests, so an item whose XADD ran after all (a frozen
Redis that wakes up) is recognised as a repeat and not added twice.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.entries import Fields
from shared.logs import get_logger
from shared.redis_values import as_text
from shared.tasks import cancel_and_wait

from .batching import ItemRefused, RedisFailed, RedisWriter, StoreItem
from .metrics import ReceiverMetrics
from .spool import Record, Segment, Spool, SpoolError

__all__ = ["Outcome", "Store", "StoreUnavailable"]

log = get_logger()

_FieldValue = bytes | str | int | float


class Outcome(enum.StrEnum):
    """What became of an item; also its metric label (a str: hashed and compared in C)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    SPOOLED = "spooled"


class StoreUnavailable(Exception):
    """Neither Redis nor the spool took the item: the caller answers 503."""


class _Spooled(msgspec.Struct, array_like=True, frozen=True):
    stream: str
    # Untyped values: msgpack keeps bytes (bin) apart from str, which a typed union cannot.
    fields: dict[str, Any]
    dedup_key: str
    max_len: int | None
    # Absent from records spooled before forensic markers became one set per stream.
    marker: str | None = None


_encode_spooled = msgspec.msgpack.Encoder().encode
_decode_spooled = msgspec.msgpack.Decoder(_Spooled).decode


def _to_record(item: StoreItem) -> bytes:
    fields = {as_text(name): _value(value) for name, value in item.fields.items()}
    return _encode_spooled(_Spooled(item.stream, fields, item.dedup_key, item.max_len, item.marker))


def _from_record(record: Record) -> StoreItem:
    spooled = _decode_spooled(record.payload)
    fields: Fields = {name: value for name, value in spooled.fields.items()}
    return StoreItem(spooled.stream, fields, spooled.dedup_key, spooled.max_len, spooled.marker)


def _value(value: object) -> _FieldValue:
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, bytes | str | int | float):
        raise TypeError(f"cannot spool a field of type {type(value).__name__}")
    return value


class Store:
    """Redis while it answers in time, else the local spool; drains the spool in order."""

    def __init__(
        self,
        redis: Redis,
        *,
        spool_dir: str | Path,
        dedup_ttl_s: float = 86_400,
        timeout_s: float = 2.0,
        batch_max: int = 512,
        replicas: int = 0,
        replicas_timeout_s: float = 0.5,
        orphan_spool_dirs: Sequence[str | Path] = (),
        metrics: ReceiverMetrics | None = None,
        report_interval_s: float = 10.0,
        close_timeout_s: float = 30.0,
    ) -> None:
        self._writer = RedisWriter(
            redis,
            dedup_ttl_ms=int(dedup_ttl_s * 1000),
            timeout_s=timeout_s,
            batch_max=batch_max,
            replicas=replicas,
            replicas_timeout_ms=int(replicas_timeout_s * 1000),
        )
        self._spool = Spool(spool_dir)
        # Spools left by processes that no longer exist (a smaller --processes): drained only.
        self._orphans = [Spool(path) for path in orphan_spool_dirs]
        self._timeout_s = timeout_s
        self._batch_max = batch_max
        self.metrics = metrics or ReceiverMetrics()
        self._report_interval_s = report_interval_s
        self._close_timeout_s = close_timeout_s
        self._spooling = False
        self._spooling_since = 0.0
        self._wake_drainer = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        await self._spool.open()
        for orphan in self._orphans:
            await orphan.open()
        if any(spool.left_over for spool in (self._spool, *self._orphans)):
            self._start_spooling("spool left by a previous process")
        self._tasks = [
            asyncio.create_task(self._drain_forever(), name="spool-drainer"),
            asyncio.create_task(self._report_forever(), name="spool-report"),
        ]

    async def close(self) -> None:
        """Finish writes under way, make one last drain attempt, release the spool."""
        await self._writer.close()
        # The drainer may be inside a redis-py call that loses a cancellation (gh-86296).
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self._spooling:
            try:
                async with asyncio.timeout(self._close_timeout_s):
                    await self._drain_all()
            except (RedisFailed, OSError, TimeoutError) as exc:
                log.warning("spool_drain_at_stop_failed", error=str(exc) or type(exc).__name__)
            except Exception:
                log.exception("spool_drain_at_stop_failed")
        for spool in (self._spool, *self._orphans):
            await spool.close()
        self.update_gauges()
        if self.spool_depth:
            log.warning(
                "spool_left",
                depth=self.spool_depth,
                directory=str(self._spool.directory),
                note="drained at the next start",
            )

    # --- state -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """`redis`, `spool` or `unavailable`, for /readyz."""
        if not self._spooling:
            return "redis"
        return "spool" if self._spool.usable else "unavailable"

    @property
    def spool_error(self) -> str | None:
        """Why this process has no spool (another process holds it...), for /readyz."""
        return None if self._spool.held else self._spool.error

    async def ready(self) -> bool:
        """Redis answers, or the spool takes events; and either way this process holds its
        spool: without one, every event would be a 503 the moment Redis fails."""
        if not self._spool.held and not await self._spool.open():
            return False
        if not self._spooling:
            try:
                await self._writer.ping()
                return True
            except RedisFailed as exc:
                self._start_spooling(str(exc))
        if not self._spool.usable:
            await self._spool.open()
        return self._spool.usable

    @property
    def spool_depth(self) -> int:
        return sum(spool.depth for spool in (self._spool, *self._orphans))

    def spool_oldest_age_s(self) -> float:
        stamps = [s.oldest_ms for s in (self._spool, *self._orphans) if s.oldest_ms is not None]
        return max(0.0, time.time() - min(stamps) / 1000) if stamps else 0.0

    def update_gauges(self) -> None:
        self.metrics.spool_depth.set(self.spool_depth)
        self.metrics.spool_oldest_age.set(self.spool_oldest_age_s())

    # --- storing -----------------------------------------------------------------------

    async def put(self, item: StoreItem) -> Outcome:
        pending = self.redis_future(item)
        if pending is not None:
            try:
                entry_id = await pending
            except (RedisFailed, ItemRefused) as exc:
                return await self.after_failure(item, exc)
            return Outcome.STORED if entry_id is not None else Outcome.DUPLICATE
        return await self._spool_item(item)

    def redis_future(self, item: StoreItem) -> asyncio.Future[bytes | None] | None:
        """While Redis takes events, the item queued: a future of its entry id (None for a
        repeat) that `after_failure` must follow if it raises. None while spooling: `put`.

        `put` in two halves, so the events path awaits the writer's future itself.
        """
        return None if self._spooling else self._writer.put(item)

    async def after_failure(self, item: StoreItem, exc: RedisFailed | ItemRefused) -> Outcome:
        """What becomes of an item whose Redis write failed: spooled (and every item after it
        until the spool is drained), or refused if the item itself cannot be written."""
        if isinstance(exc, ItemRefused):
            # This item only; Redis is fine, so nobody else's store changes course.
            raise StoreUnavailable(f"event cannot be written: {exc}") from exc
        self._start_spooling(str(exc))
        return await self._spool_item(item)

    async def _spool_item(self, item: StoreItem) -> Outcome:
        try:
            record = _to_record(item)
        except (msgspec.EncodeError, UnicodeEncodeError, TypeError) as exc:
            raise StoreUnavailable(f"event cannot be spooled: {exc}") from exc
        try:
            await self._spool.append(record, time.time_ns() // 1_000_000)
        except SpoolError as exc:
            raise StoreUnavailable(f"Redis failing and spool unusable: {exc}") from exc
        return Outcome.SPOOLED

    def _start_spooling(self, reason: str) -> None:
        if not self._spooling:
            self._spooling = True
            self._spooling_since = time.monotonic()
            log.warning("store_spooling", reason=reason, directory=str(self._spool.directory))
        self._wake_drainer.set()

    # --- draining ----------------------------------------------------------------------

    async def _drain_forever(self) -> None:
        retry_s = min(self._timeout_s, 0.5)
        # Count what a previous process left (off the start path: the port is open by now).
        for spool in (*self._orphans, self._spool):
            try:
                await spool.scan()
            except OSError:
                log.exception("spool_scan_failed", directory=str(spool.directory))
        self.update_gauges()
        while True:
            await self._wake_drainer.wait()
            self._wake_drainer.clear()
            while self._spooling:
                try:
                    await self._drain_all()
                except (RedisFailed, OSError) as exc:
                    log.debug("spool_drain_retry", error=str(exc))
                    await asyncio.sleep(retry_s)
                except Exception:
                    # Not Redis, not the disk: a bug, or a record this version cannot read.
                    # The drainer must not die of it; it says so and tries again later.
                    log.exception("spool_drain_failed")
                    await asyncio.sleep(self._report_interval_s)

    async def _drain_all(self) -> None:
        """Move every spooled item into Redis, oldest first; back to Redis mode once empty."""
        await self._writer.ping()
        for spool in (*self._orphans, self._spool):
            await spool.scan()
            await self._drain(spool)
        # Nothing can be appended between the last depth check and this switch: no await.
        if self.spool_depth == 0:
            self._spooling = False
            log.info(
                "spool_drained", spooled_for_s=round(time.monotonic() - self._spooling_since, 3)
            )
            self.update_gauges()

    async def _drain(self, spool: Spool) -> int:
        drained = 0
        while spool.depth:
            found = await spool.oldest_segment()
            if found is None:
                # What is left is still being written: wait for the fsync, then go on.
                await asyncio.sleep(0.01)
                continue
            segment, records = found
            drained += await self._drain_segment(spool, segment, records)
            await spool.remove(segment)
        return drained

    async def _drain_segment(self, spool: Spool, segment: Segment, records: list[Record]) -> int:
        for start in range(0, len(records), self._batch_max):
            chunk = records[start : start + self._batch_max]
            replies = await self._writer.run([_from_record(record) for record in chunk])
            for record, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, RedisFailed):
                    # Drained again from this point next time; the script skips what is in.
                    raise reply
                if isinstance(reply, ItemRefused):
                    # It would block every record behind it: kept aside, said loudly.
                    path = await spool.set_aside(record)
                    log.error("spool_record_set_aside", error=str(reply), file=str(path))
            duplicates = sum(1 for reply in replies if reply is None)
            rest = records[start + len(chunk) : start + len(chunk) + 1]
            spool.mark_drained(segment, len(chunk), rest[0].spooled_at_ms if rest else None)
            self.metrics.spool_drained.inc(len(chunk))
            if duplicates:
                log.info("spool_drain_repeats_skipped", count=duplicates, segment=segment.path.name)
        return len(records)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self._report_interval_s)
            self.update_gauges()
            if self.spool_depth:
                log.warning(
                    "spool_backlog",
                    depth=self.spool_depth,
                    oldest_age_s=round(self.spool_oldest_age_s(), 3),
                    mode=self.mode,
                )
