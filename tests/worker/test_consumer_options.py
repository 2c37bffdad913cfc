"""Per-consumer options on the decorator (`timeout`, `concurrency`, `max_deliveries`,
`start`), their defaults from the settings, and what a consumer is given: its own options,
never the other components' settings."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import group_info, pending_ids, running
from worker.consumers import (
    ConsumerLoadError,
    ConsumerOptions,
    Context,
    SetupContext,
    consumer,
    resolve_options,
)
from worker.dlq import read_all
from worker.entry import main as worker_main


async def _settled(redis: Redis, stream: str, group: str, count: int) -> bool:
    info = await group_info(redis, stream, group)
    return bool(info) and info["pending"] == 0 and info["entries-read"] == count


async def _caught_up(redis: Redis, stream: str, group: str) -> bool:
    info = await group_info(redis, stream, group)
    return bool(info) and info["pending"] == 0 and info["lag"] == 0


async def test_a_hung_handler_times_out_frees_its_lane_and_is_retried_then_dead_lettered(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(concurrency=1, retry_base="20ms", max_deliveries=3)
    attempts: list[tuple[str, int]] = []

    @consumer("hangs", timeout=timedelta(milliseconds=150))
    async def hangs(event: Event, ctx: Context) -> None:
        attempts.append((ctx.entry_id, ctx.deliveries))
        if event.call_id == "c-0":
            await asyncio.Event().wait()  # never set: hangs until cancelled

    keys = Keys(settings.key_prefix)
    async with running(settings, redis, [hangs]):
        stuck, *others = await add_events(redis, settings, *sample_bodies(3))
        letters = await eventually(lambda: read_all(redis, keys.dlq), what="a dead letter")
        await eventually(lambda: _settled(redis, keys.events(), "hangs", 3))
    # One lane only: the two others could run only because the hung call was cut off.
    assert Counter(entry_id for entry_id, _ in attempts if entry_id != stuck) == dict.fromkeys(
        others, 1
    )
    assert [deliveries for entry_id, deliveries in attempts if entry_id == stuck] == [1, 2, 3]
    [letter] = letters
    assert (letter.original_id, letter.group, letter.attempts) == (stuck, "hangs", 3)
    assert "TimeoutError" in letter.error
    assert "0.15s" in letter.error
    failed = logs.named("handler_failed")
    assert [line["deliveries"] for line in failed] == [1, 2, 3]
    assert all(line["timed_out"] for line in failed)
    assert await pending_ids(redis, keys.events(), "hangs") == []


async def test_the_handler_timeout_defaults_to_the_setting(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(handler_timeout="100ms", max_deliveries=1)
    cancelled: list[str] = []

    @consumer("sleepy")
    async def sleepy(event: Event, ctx: Context) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(ctx.entry_id)
            raise

    keys = Keys(settings.key_prefix)
    async with running(settings, redis, [sleepy]):
        [entry_id] = await add_events(redis, settings, *sample_bodies(1))
        [letter] = await eventually(lambda: read_all(redis, keys.dlq), what="a dead letter")
    assert cancelled == [entry_id]
    assert (letter.original_id, letter.attempts) == (entry_id, 1)
    assert "TimeoutError" in letter.error


async def test_a_handler_that_swallows_the_timeout_is_cancelled_again(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(max_deliveries=1)
    cancellations: list[int] = []

    @consumer("stubborn", timeout=0.1)
    async def stubborn(event: Event, ctx: Context) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations.append(len(cancellations) + 1)
                if len(cancellations) == 2:
                    raise

    keys = Keys(settings.key_prefix)
    async with running(settings, redis, [stubborn]):
        [entry_id] = await add_events(redis, settings, *sample_bodies(1))
        [letter] = await eventually(lambda: read_all(redis, keys.dlq), what="a dead letter")
    assert cancellations == [1, 2]
    assert letter.original_id == entry_id
    assert "TimeoutError" in letter.error


async def test_max_deliveries_per_consumer_overrides_the_setting(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(retry_base="20ms", max_deliveries=3)
    attempts: dict[str, list[int]] = {"strict": [], "patient": []}

    def failing(name: str, **options: Any) -> Any:
        async def fail(event: Event, ctx: Context) -> None:
            attempts[name].append(ctx.deliveries)
            raise RuntimeError("no")

        return consumer(name, **options)(fail)

    keys = Keys(settings.key_prefix)

    async def two_letters() -> bool:
        return len(await read_all(redis, keys.dlq)) == 2

    async with running(settings, redis, [failing("strict", max_deliveries=2), failing("patient")]):
        [entry_id] = await add_events(redis, settings, *sample_bodies(1))
        await eventually(two_letters)
    assert attempts == {"strict": [1, 2], "patient": [1, 2, 3]}
    letters = {letter.group: letter for letter in await read_all(redis, keys.dlq)}
    assert {g: (lt.original_id, lt.attempts) for g, lt in letters.items()} == {
        "strict": (entry_id, 2),
        "patient": (entry_id, 3),
    }


async def test_concurrency_per_consumer_overrides_the_setting(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(concurrency=6)
    now: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    release = asyncio.Event()

    def holding(name: str, **options: Any) -> Any:
        async def hold(event: Event, ctx: Context) -> None:
            now[name] += 1
            peak[name] = max(peak[name], now[name])
            await release.wait()
            now[name] -= 1

        return consumer(name, **options)(hold)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [holding("narrow", concurrency=2), holding("wide")]):
        await add_events(redis, settings, *sample_bodies(10))

        async def both_full() -> bool:
            return now["narrow"] == 2 and now["wide"] == 6

        await eventually(both_full)
        await asyncio.sleep(0.2)  # time for a third narrow handler to start, were it allowed
        release.set()
        await eventually(lambda: _settled(redis, stream, "narrow", 10))
        await eventually(lambda: _settled(redis, stream, "wide", 10))
    assert peak == {"narrow": 2, "wide": 6}


async def test_a_new_consumer_starts_with_the_oldest_kept_event_or_with_new_ones_only(
    settings: Settings, redis: Redis, logs: LogLines
) -> None:
    seen: dict[str, list[str]] = {"backlog": [], "fresh": []}

    def recording(name: str, **options: Any) -> Any:
        async def record(event: Event, ctx: Context) -> None:
            seen[name].append(ctx.entry_id)

        return consumer(name, **options)(record)

    backlog, fresh = recording("backlog"), recording("fresh", start="new")
    stream = Keys(settings.key_prefix).events()
    old = await add_events(redis, settings, *sample_bodies(3))
    async with running(settings, redis, [backlog, fresh]):

        async def both_groups() -> bool:
            return len(logs.named("consumer_group_created")) == 2

        await eventually(both_groups)
        new = await add_events(redis, settings, *sample_bodies(2))
        await eventually(lambda: _caught_up(redis, stream, "fresh"))
        await eventually(lambda: _caught_up(redis, stream, "backlog"))
    assert sorted(seen["backlog"]) == sorted(old + new)
    assert sorted(seen["fresh"]) == sorted(new)
    # Only where the group is created: once it exists, it goes on from where it was.
    later = await add_events(redis, settings, *sample_bodies(2))
    async with running(settings, redis, [backlog, fresh]):
        await eventually(lambda: _caught_up(redis, stream, "fresh"))
    assert sorted(seen["fresh"]) == sorted(new + later)


def test_options_take_their_defaults_from_the_settings(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(handler_timeout="45s", concurrency=7, max_deliveries=4)
    plain = consumer("plain")(_noop)
    tuned = consumer("tuned", timeout=2.5, concurrency=3, max_deliveries=9, start="new")(_noop)
    assert resolve_options(plain, settings) == ConsumerOptions(
        timeout_s=45.0, concurrency=7, max_deliveries=4, start="oldest"
    )
    assert resolve_options(tuned, settings) == ConsumerOptions(
        timeout_s=2.5, concurrency=3, max_deliveries=9, start="new"
    )


def test_option_mistakes_are_named_where_the_consumer_is_declared() -> None:
    cases: dict[str, dict[str, Any]] = {
        "timeout must be more than 0": {"timeout": 0},
        "concurrency must be 1 or more": {"concurrency": 0},
        "max_deliveries must be 1 or more": {"max_deliveries": 0},
        "start must be 'oldest' or 'new'": {"start": "latest"},
    }
    for expected, options in cases.items():
        with pytest.raises(ValueError, match=f"consumer 'bad': {expected}"):
            consumer("bad", **options)(_noop)


def test_a_timeout_past_claim_idle_is_refused_at_start(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(claim_idle="1m")
    slow = consumer("slow", timeout=timedelta(minutes=2))(_noop)
    with pytest.raises(ConsumerLoadError) as caught:
        resolve_options(slow, settings)
    message = str(caught.value)
    assert message.startswith("consumer 'slow': timeout 120s")
    assert "RTT_CLAIM_IDLE (60s)" in message


def test_the_worker_exits_2_naming_the_setting_when_the_default_timeout_is_too_long(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--redis-url", redis_url, "--handler-timeout", "10m", "--claim-idle", "5m"]
    assert worker_main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("rtt worker: consumer 'alerts': timeout 600s (RTT_HANDLER_TIMEOUT)")
    assert "RTT_CLAIM_IDLE (300s)" in line


async def test_a_consumer_gets_its_own_options_and_no_other_components_credentials(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    secrets = ["s3cret-auth", "hooks.slack.example/T0/SECRET", "pd-routing-secret"]
    settings = make_settings(
        worker_id="w-ctx",
        basic_auth=f"ops:{secrets[0]}",
        alert_slack_webhook_url=f"https://{secrets[1]}",
        alert_pagerduty_routing_key=secrets[2],
        handler_timeout="30s",
    )
    given: list[Context | SetupContext] = []

    @consumer("inspect", concurrency=3)
    class Inspect:
        async def setup(self, ctx: SetupContext) -> None:
            given.append(ctx)

        async def handle(self, event: Event, ctx: Context) -> None:
            given.append(ctx)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [Inspect]):
        await add_events(redis, settings, *sample_bodies(1))
        await eventually(lambda: _settled(redis, stream, "inspect", 1))
    setup_ctx, ctx = given
    assert isinstance(setup_ctx, SetupContext)
    assert isinstance(ctx, Context)
    options = ConsumerOptions(timeout_s=30.0, concurrency=3, max_deliveries=5, start="oldest")
    for got in (setup_ctx, ctx):
        assert (got.consumer, got.worker_id, got.key_prefix) == (
            "inspect",
            "w-ctx",
            settings.key_prefix,
        )
        assert got.options == options
        assert got.keys == Keys(settings.key_prefix)
        assert not hasattr(got, "settings")
        assert not any(secret in repr(got) for secret in secrets), repr(got)


async def _noop(event: Event, ctx: Context) -> None:
    return None
