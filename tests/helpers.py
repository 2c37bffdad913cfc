"""Helpers for every test: one way to wait from plain code, one from a coroutine, one way
to put events on the stream, and the log lines a test captured. Fixtures live in
conftest.py; tests import helpers from here."""

from __future__ import annotations

import asyncio
import inspect
import io
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.entries import StreamEntry
from shared.keys import Keys
from shared.settings import Settings

__all__ = ["LogLines", "SeparateWrites", "add_events", "add_events_sync", "eventually", "wait_for"]


def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float = 15.0,
    what: str = "condition",
    interval_s: float = 0.05,
) -> Any:
    """Poll `predicate` until it returns something true, and return that; for plain code
    (child processes, sync clients). TimeoutError names `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


async def eventually(
    predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition"
) -> Any:
    """The same from a coroutine, without blocking the loop (servers of the test run on it);
    `predicate` may return a value or an awaitable."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}") from None


async def add_events(
    redis: Redis,
    settings: Settings,
    *bodies: bytes,
    shard: int = 0,
    received_at_ms: int | None = None,
) -> list[str]:
    """XADD each body, in order and one at a time, as the receiver stores it (its type read
    from the body), received now or from `received_at_ms` on, a millisecond apart; returns
    their entry ids. Generated bodies: `tests.bodies.sample_bodies`."""
    stream = Keys(settings.key_prefix, settings.shards).events(shard)
    first_ms = int(time.time() * 1000) if received_at_ms is None else received_at_ms
    ids = []
    for n, body in enumerate(bodies):
        entry = StreamEntry(_event_type(body), body, first_ms + n, f"req-{n}")
        entry_id: Any = await redis.xadd(stream, entry.to_fields())
        ids.append(entry_id.decode())
    return ids


def add_events_sync(client: SyncRedis, prefix: str, *bodies: bytes) -> list[str]:
    """The same from plain code (tests of child processes), in one pipeline."""
    stream = Keys(prefix).events()
    first_ms = int(time.time() * 1000)
    with client.pipeline(transaction=False) as pipe:
        for n, body in enumerate(bodies):
            pipe.xadd(
                stream, StreamEntry(_event_type(body), body, first_ms + n, f"req-{n}").to_fields()
            )
        return [entry_id.decode() for entry_id in pipe.execute()]


def _event_type(body: bytes) -> str:
    return str(msgspec.json.decode(body)["eventType"])


class LogLines:
    """The JSON lines this process logged, parsed (the `logs` fixture)."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self._buffer = buffer

    def all(self) -> list[dict[str, Any]]:
        lines = self._buffer.getvalue().splitlines()
        return [msgspec.json.decode(line) for line in lines if line.strip()]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.all() if line.get("event") == event]


class SeparateWrites(io.BytesIO):
    """A log file that keeps each write apart, as a pipe's reader would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return super().write(data)
