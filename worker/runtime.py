"""The consumer-group runtime: read, handle, acknowledge; one reader per consumer and stream."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.entries import StreamEntry
from shared.events import DecodeFailure, UnknownEvent, decode_event
from shared.keys import Keys
from shared.logs import get_logger
from shared.settings import Settings

from .consumers import Consumer, Context, SetupContext

__all__ = ["Worker", "default_worker_id"]

log = get_logger()


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Runs every consumer on every event stream until `stop()`."""

    def __init__(self, settings: Settings, redis: Redis, consumers: Sequence[Consumer]) -> None:
        self.settings = settings
        self.redis = redis
        self.consumers = list(consumers)
        self.keys = Keys(settings.key_prefix, settings.shards)
        self.worker_id = settings.worker_id or default_worker_id()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        setup_ctx = SetupContext(self.redis, self.settings, self.keys, log)
        for item in self.consumers:
            if item.setup is not None:
                await item.setup(setup_ctx)
        try:
            async with asyncio.TaskGroup() as tasks:
                for item in self.consumers:
                    for stream in self.keys.event_streams():
                        tasks.create_task(self._read_loop(item, stream))
        finally:
            for item in self.consumers:
                if item.teardown is not None:
                    await item.teardown()

    async def _ensure_group(self, group: str, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
            log.info("consumer_group_created", group=group, stream=stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_loop(self, item: Consumer, stream: str) -> None:
        await self._ensure_group(item.name, stream)
        block_ms = int(self.settings.block.total_seconds() * 1000)
        while not self._stopping.is_set():
            reply: Any = await self.redis.xreadgroup(
                item.name, self.worker_id, {stream: ">"},
                count=self.settings.batch_size, block=block_ms,
            )  # fmt: skip
            for _, entries in reply or []:
                await self._handle_batch(item, stream, entries)

    async def _handle_batch(
        self, item: Consumer, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> None:
        done: list[bytes] = []
        for entry_id, fields in entries:
            entry = StreamEntry.from_fields(fields)
            event = decode_event(entry.body)
            if isinstance(event, DecodeFailure | UnknownEvent):
                log.error("entry_undecodable", stream=stream, entry_id=entry_id.decode())
                done.append(entry_id)
                continue
            if not item.wants(event.event_type):
                done.append(entry_id)
                continue
            bound = log.bind(
                consumer=item.name, stream_id=entry_id.decode(), call_id=event.call_id,
                transcription_id=event.transcription_info.id,
            )  # fmt: skip
            ctx = Context(
                log=bound, redis=self.redis, settings=self.settings, keys=self.keys,
                deliveries=1, entry_id=entry_id.decode(), stream=stream,
                received_at_ms=entry.received_at_ms,
            )  # fmt: skip
            try:
                await item.handle(event, ctx)
            except Exception:
                bound.exception("handler_failed")
                continue
            done.append(entry_id)
        if done:
            await self.redis.xack(stream, item.name, *done)
