"""Retention: acknowledged entries go after the retention period; what some group still
needs stays, however old, unless the emergency length cap drops it (and says so)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from shared.events import Event
from shared.keys import Keys
from shared.redis_values import now_ms
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import running
from worker import recovery
from worker.consumers import Context, consumer
from worker.retention import trim

DAY_MS = 86_400_000


async def _consume(redis: Redis, stream: str, group: str, count: int, ack: int) -> list[bytes]:
    """Deliver `count` entries to `group` and acknowledge the first `ack` of them."""
    await recovery.create_group(redis, stream, group)
    reply: Any = await redis.xreadgroup(group, "w", {stream: ">"}, count=count)
    ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
    if ack:
        await redis.xack(stream, group, *ids[:ack])
    return ids


async def _ids(redis: Redis, stream: str) -> list[str]:
    rows: Any = await redis.xrange(stream)
    return [entry_id.decode() for entry_id, _ in rows]


async def test_entries_every_group_acknowledged_go_once_past_retention(
    settings: Settings, redis: Redis
) -> None:
    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(10))
    await _consume(redis, stream, "a", 10, ack=10)
    await _consume(redis, stream, "b", 10, ack=10)
    kept = await trim(redis, stream, now_ms=now_ms(), retention_ms=DAY_MS, max_len=1000)
    assert kept.trimmed == 0  # younger than the retention period
    later = await trim(
        redis, stream, now_ms=now_ms() + 2 * DAY_MS, retention_ms=DAY_MS, max_len=1000
    )
    # The last entry delivered stays: it marks where the groups are.
    assert later.trimmed == 9
    assert await _ids(redis, stream) == ids[-1:]


async def test_what_a_slow_group_has_not_acknowledged_is_kept(
    settings: Settings, redis: Redis
) -> None:
    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(10))
    await _consume(redis, stream, "fast", 10, ack=10)
    await _consume(redis, stream, "slow", 6, ack=3)  # 3 pending, 4 never delivered
    result = await trim(
        redis, stream, now_ms=now_ms() + 2 * DAY_MS, retention_ms=DAY_MS, max_len=1000
    )
    assert result.trimmed == 3
    assert await _ids(redis, stream) == ids[3:]


async def test_a_group_that_received_nothing_keeps_everything(
    settings: Settings, redis: Redis
) -> None:
    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(5))
    await _consume(redis, stream, "done", 5, ack=5)
    await recovery.create_group(redis, stream, "new")
    result = await trim(
        redis, stream, now_ms=now_ms() + 2 * DAY_MS, retention_ms=DAY_MS, max_len=1000
    )
    assert result.trimmed == 0
    assert await _ids(redis, stream) == ids


async def test_a_stream_without_groups_is_not_trimmed(settings: Settings, redis: Redis) -> None:
    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(3))
    result = await trim(
        redis, stream, now_ms=now_ms() + 2 * DAY_MS, retention_ms=DAY_MS, max_len=1000
    )
    assert (result.trimmed, result.capped) == (0, 0)
    assert await _ids(redis, stream) == ids


async def test_the_length_cap_drops_the_oldest_even_unacknowledged(
    settings: Settings, redis: Redis
) -> None:
    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(12))
    await recovery.create_group(redis, stream, "stalled")
    result = await trim(redis, stream, now_ms=now_ms(), retention_ms=DAY_MS, max_len=5)
    assert result.capped == 7
    assert await _ids(redis, stream) == ids[-5:]


async def test_the_worker_trims_on_its_own_and_reports_capped_entries(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(stats_interval="100ms", stream_retention="0s", stream_max_len=8)

    @consumer("keeps_up")
    async def keeps_up(event: Event, ctx: Context) -> None:
        return None

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [keeps_up]) as worker:
        await add_events(redis, settings, *sample_bodies(6))

        async def trimmed_to_one() -> bool:
            return int(await redis.xlen(stream)) == 1

        await eventually(trimmed_to_one)
        # A group that stopped reading: the cap, not retention, bounds the stream now.
        await recovery.create_group(redis, stream, "stalled", "$")
        await add_events(redis, settings, *sample_bodies(12))

        # A sweep may cap the stream while the 12 are still being added: wait for the sweep
        # that comes after the last of them.
        async def capped() -> bool:
            return bool(logs.named("stream_capped")) and int(await redis.xlen(stream)) <= 8

        await eventually(capped, what="the stream capped to 8")
        assert int(await redis.xlen(stream)) <= 8
        dropped = sum(line["dropped"] for line in logs.named("stream_capped"))
        assert worker.capped == {stream: dropped}
    assert logs.named("stream_trimmed")
    assert logs.named("stream_capped")[0]["level"] == "error"
