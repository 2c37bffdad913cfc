"""`rtt stats` and `rtt dlq` as an operator runs them, against real dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import structlog
from redis.asyncio import Redis

from rtt.dlq import main as dlq_main
from rtt.stats import main as stats_main
from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import running
from worker import recovery
from worker.consumers import Context, consumer
from worker.dlq import read_all


async def _cli(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """The command runs its own event loop, as from a shell: give it a thread.

    It sets up logging as a program does, caching loggers on first use; turn the caching
    off again so no logger keeps this test's captured stdout after the test.
    """
    code = await asyncio.to_thread(main, argv)
    structlog.configure(cache_logger_on_first_use=False)
    return code


def _flags(settings: Settings) -> list[str]:
    return [
        "--redis-url",
        str(settings.redis_url),
        "--key-prefix",
        settings.key_prefix,
        "--log-format",
        "json",
    ]


async def _dead_letters(
    make_settings: Callable[..., Settings], redis: Redis, groups: list[str], count: int
) -> Settings:
    """Run consumers that always fail until `count` entries each are dead letters."""
    settings = make_settings(max_deliveries=1)
    failing = []
    for name in groups:

        @consumer(name)
        async def fail(event: Event, ctx: Context) -> None:
            raise RuntimeError("sink unreachable")

        failing.append(fail)
    keys = Keys(settings.key_prefix)
    async with running(settings, redis, failing):
        await add_events(redis, settings, *sample_bodies(count))

        async def all_dead() -> bool:
            return len(await read_all(redis, keys.dlq)) == count * len(groups)

        await eventually(all_dead)
    return settings


async def test_stats_reports_length_lag_pending_and_dead_letters(
    make_settings: Callable[..., Settings],
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    logs: LogLines,
) -> None:
    settings = await _dead_letters(make_settings, redis, ["billing"], 2)
    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(3))
    await redis.xreadgroup("billing", "w9", {stream: ">"}, count=1)  # one pending, two lagging
    capsys.readouterr()  # what the worker logged
    assert await _cli(stats_main, [*_flags(settings), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [stream_report] = report["streams"]
    assert stream_report["stream"] == stream
    assert stream_report["length"] == 5
    [group] = stream_report["groups"]
    assert (group["group"], group["lag"], group["pending"]) == ("billing", 2, 1)
    assert group["oldest_pending_age_s"] >= 0
    assert report["dlq"] == {"length": 2, "by_group": {"billing": 2}}

    assert await _cli(stats_main, _flags(settings)) == 0
    table = capsys.readouterr().out
    assert f"stream {stream}  length 5" in table
    assert "dead letters: 2  (billing 2)" in table
    [row] = [line.split() for line in table.splitlines() if line.strip().startswith("billing")]
    assert row[:3] == ["billing", "2", "1"]


async def test_dlq_list_show_replay_and_purge(
    make_settings: Callable[..., Settings],
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    logs: LogLines,
) -> None:
    settings = await _dead_letters(make_settings, redis, ["billing", "crm"], 2)
    flags = _flags(settings)
    capsys.readouterr()  # what the worker logged
    assert await _cli(dlq_main, ["list", *flags, "--group", "crm", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["group"] for item in listed] == ["crm", "crm"]
    assert all(item["error"] == "RuntimeError('sink unreachable')" for item in listed)

    assert await _cli(dlq_main, ["show", *flags, listed[0]["id"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["body"]["eventType"] == "realTimeTranscriptionStopped"
    assert shown["original_id"] == listed[0]["original_id"]

    assert await _cli(dlq_main, ["replay", *flags, listed[0]["id"]]) == 0
    assert f"{listed[0]['id']} -> " in capsys.readouterr().out
    stream = Keys(settings.key_prefix).events()
    rows = await redis.xrevrange(stream, count=1)
    [(_, fields)] = rows
    assert fields[b"group"] == b"crm"  # only the failing group gets it again

    assert await _cli(dlq_main, ["purge", *flags, "--all", "--group", "billing"]) == 0
    remaining = await read_all(redis, Keys(settings.key_prefix).dlq)
    assert [letter.id for letter in remaining] == [listed[1]["id"]]

    assert await _cli(dlq_main, ["show", *flags, "0-1"]) == 1
    assert await _cli(dlq_main, ["purge", *flags]) == 2  # neither ids nor --all
    capsys.readouterr()


async def test_a_replayed_entry_reaches_only_its_group(
    make_settings: Callable[..., Settings],
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    logs: LogLines,
) -> None:
    settings = await _dead_letters(make_settings, redis, ["crm"], 1)
    handled: dict[str, list[int]] = {"crm": [], "billing": []}

    def recorder(name: str) -> object:
        @consumer(name)
        async def record(event: Event, ctx: Context) -> None:
            handled[name].append(ctx.deliveries)

        return record

    stream = Keys(settings.key_prefix).events()
    # billing already handled everything on the stream before the replay.
    await recovery.create_group(redis, stream, "billing", "$")
    assert await _cli(dlq_main, ["replay", *_flags(settings), "--all"]) == 0
    capsys.readouterr()
    async with running(settings, redis, [recorder("crm"), recorder("billing")]):  # type: ignore[list-item]

        async def crm_done() -> bool:
            return handled["crm"] == [1]

        await eventually(crm_done)
        await eventually(lambda: _acked(redis, stream, "billing"))
    assert handled == {"crm": [1], "billing": []}
    assert await read_all(redis, Keys(settings.key_prefix).dlq) == []


async def _acked(redis: Redis, stream: str, group: str) -> bool:
    groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
    info = groups[group.encode()]
    return bool(info["pending"] == 0 and info["lag"] == 0)
