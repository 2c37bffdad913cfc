"""Silences: mute alerts that match some fields for a while, for every worker at once.

Kept in one Redis hash (id -> JSON), read on each alert so a silence takes effect at once
everywhere; a muted alert is still logged (at info) and counted, per silence.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Final

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys

from .pipelined import Call
from .rules import GROUP_FIELDS, Alert, alert_field

__all__ = [
    "Silence",
    "active_of",
    "active_silences",
    "add_silence",
    "count_hit",
    "hit_call",
    "list_silences",
    "matching_silence",
    "parse_matchers",
    "remove_silence",
    "silence_for",
    "silences_call",
]


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    # field -> value; the value may use shell wildcards (`*`, `?`, `[...]`).
    matchers: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int
    comment: str = ""
    created_by: str | None = None

    def active(self, now_ms: int) -> bool:
        return self.starts_at_ms <= now_ms < self.ends_at_ms

    def matches(self, alert: Alert) -> bool:
        return all(
            fnmatchcase(alert_field(alert, name) or "", pattern)
            for name, pattern in self.matchers.items()
        )

    @property
    def ends_at(self) -> datetime:
        return datetime.fromtimestamp(self.ends_at_ms / 1000, UTC)


_silence_decoder: Final = msgspec.json.Decoder(Silence)


def _now_ms() -> int:
    return int(time.time() * 1000)


def parse_matchers(items: list[str]) -> dict[str, str]:
    """`cause=connection-error` pairs into a dict; a field name must be an alert field."""
    matchers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--match {item!r}: expected field=value")
        if name not in GROUP_FIELDS:
            raise ValueError(
                f"--match {item!r}: unknown field {name!r}; "
                f"expected one of {', '.join(sorted(GROUP_FIELDS))}"
            )
        matchers[name] = value.strip()
    if not matchers:
        raise ValueError("a silence needs at least one --match field=value")
    return matchers


async def add_silence(
    redis: Redis,
    keys: Keys,
    matchers: Mapping[str, str],
    duration: timedelta,
    *,
    comment: str = "",
    created_by: str | None = None,
) -> Silence:
    now = _now_ms()
    silence = Silence(
        id=uuid.uuid4().hex[:12],
        matchers=dict(matchers),
        starts_at_ms=now,
        ends_at_ms=now + int(duration.total_seconds() * 1000),
        comment=comment,
        created_by=created_by,
    )
    await redis.hset(keys.silences, silence.id, msgspec.json.encode(silence))
    await _prune(redis, keys, now)
    return silence


async def _all(redis: Redis, keys: Keys) -> list[Silence]:
    raw: dict[Any, Any] = await redis.hgetall(keys.silences)
    return [_silence_decoder.decode(value) for value in raw.values()]


async def _prune(redis: Redis, keys: Keys, now_ms: int) -> None:
    expired = [s.id for s in await _all(redis, keys) if s.ends_at_ms <= now_ms]
    if expired:
        await redis.hdel(keys.silences, *expired)
        await redis.hdel(keys.silence_hits, *expired)


async def list_silences(redis: Redis, keys: Keys) -> list[tuple[Silence, int]]:
    """Active silences, soonest to end first, each with how many alerts it muted."""
    await _prune(redis, keys, _now_ms())
    silences = sorted(await _all(redis, keys), key=lambda s: s.ends_at_ms)
    if not silences:
        return []
    hits = await redis.hmget(keys.silence_hits, [s.id for s in silences])
    return [(s, int(h or 0)) for s, h in zip(silences, hits, strict=True)]


async def remove_silence(redis: Redis, keys: Keys, silence_id: str) -> bool:
    removed = int(await redis.hdel(keys.silences, silence_id))
    await redis.hdel(keys.silence_hits, silence_id)
    return removed > 0


async def matching_silence(redis: Redis, keys: Keys, alert: Alert) -> Silence | None:
    return silence_for(await active_silences(redis, keys), alert)


async def active_silences(redis: Redis, keys: Keys) -> list[Silence]:
    """The silences in force now: read once for a batch of alerts."""
    now = _now_ms()
    return [silence for silence in await _all(redis, keys) if silence.active(now)]


def silences_call(keys: Keys) -> Call:
    """What `active_silences` reads, to run in a batch; `active_of` reads its result."""
    return Call.command("HGETALL", keys.silences)


def active_of(raw: Mapping[Any, Any]) -> list[Silence]:
    """The silences in force now, of what `silences_call` read."""
    now = _now_ms()
    silences = (_silence_decoder.decode(value) for value in raw.values())
    return [silence for silence in silences if silence.active(now)]


def silence_for(silences: list[Silence], alert: Alert) -> Silence | None:
    if not silences:
        return None
    return next((silence for silence in silences if silence.matches(alert)), None)


async def count_hit(redis: Redis, keys: Keys, silence_id: str) -> None:
    await redis.hincrby(keys.silence_hits, silence_id, 1)


def hit_call(keys: Keys, silence_id: str) -> Call:
    """`count_hit`, to run in a batch."""
    return Call.command("HINCRBY", keys.silence_hits, silence_id, 1)
