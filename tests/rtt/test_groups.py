"""`rtt groups`: list the consumer groups, and retire one so retention can trim again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import structlog
from redis.asyncio import Redis

from rtt.groups import main as groups_main
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


async def _cli(argv: list[str]) -> int:
    code = await asyncio.to_thread(groups_main, argv)
    structlog.configure(cache_logger_on_first_use=False)
    return code


def _flags(settings: Settings) -> list[str]:
    return ["--redis-url", str(settings.redis_url), "--key-prefix", settings.key_prefix]


@consumer("billing")
async def billing(event: Event, ctx: Context) -> None:
    pass


async def test_a_group_with_a_live_member_is_kept_unless_forced(
    make_settings: Callable[..., Settings],
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    logs: LogLines,
) -> None:
    settings = make_settings(worker_id="w-live")
    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(3))
    async with running(settings, redis, [billing]):

        async def consumed() -> bool:
            groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
            return b"billing" in groups and groups[b"billing"]["lag"] == 0

        await eventually(consumed)
        capsys.readouterr()
        assert await _cli(["list", "--json", *_flags(settings)]) == 0
        listed = {
            row["group"]: row for row in map(json.loads, capsys.readouterr().out.split("\n")[:-1])
        }
        assert listed["billing"]["live"] == ["w-live"]
        assert listed["billing"]["streams"] == [stream]

        assert await _cli(["remove", "billing", *_flags(settings)]) == 1
        err = capsys.readouterr().err
        assert "group 'billing' has live members: w-live" in err
        assert "--force" in err
        assert b"billing" in {g["name"] for g in await redis.xinfo_groups(stream)}

        assert await _cli(["remove", "billing", "--force", *_flags(settings)]) == 0
        assert f"removed group billing from {stream}" in capsys.readouterr().out


async def test_removing_a_retired_group_lets_retention_trim(
    make_settings: Callable[..., Settings],
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    logs: LogLines,
) -> None:
    settings = make_settings()
    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(5))
    # `alerts` handled everything; a consumer that ran once and is gone did not.
    await recovery.create_group(redis, stream, "alerts", "$")
    await recovery.create_group(redis, stream, "retired", "0")
    await redis.xreadgroup("retired", "w-gone", {stream: ">"}, count=2)
    kept = await trim(redis, stream, now_ms=now_ms(), retention_ms=0, max_len=1000)
    assert kept.trimmed == 0
    assert await redis.xlen(stream) == 5

    assert await _cli(["list", *_flags(settings)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["GROUP", "LIVE", "MEMBERS", "LAG", "PENDING"]
    assert table[1].split() == ["alerts", "0", "0", "0", "0"]
    assert table[2].split() == ["retired", "0", "1", "3", "2"]

    assert await _cli(["remove", "retired", *_flags(settings)]) == 0
    assert [g["name"] for g in await redis.xinfo_groups(stream)] == [b"alerts"]
    trimmed = await trim(redis, stream, now_ms=now_ms(), retention_ms=0, max_len=1000)
    assert trimmed.trimmed == 4  # all but the last one delivered, which trim keeps

    assert await _cli(["remove", "retired", *_flags(settings)]) == 1
    assert "no group 'retired'" in capsys.readouterr().err
