"""The runtime in one process against a real Valkey: delivery, filtering, concurrency,
retries, dead letters, shutdown and group recovery."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.embedded import EmbeddedValkey, free_port
from shared.events import Event, Started, Stopped
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import group_info, pending_ids, running
from worker.consumers import Context, consumer
from worker.dlq import read_all
from worker.retry import backoff_s


async def test_every_entry_is_handled_once_then_acknowledged(
    settings: Settings, redis: Redis
) -> None:
    seen: list[tuple[str, int, str, int]] = []

    @consumer("recorder")
    async def recorder(event: Event, ctx: Context) -> None:
        seen.append((ctx.entry_id, ctx.deliveries, ctx.stream, ctx.received_at_ms))

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [recorder]):
        ids = await add_events(
            redis, settings, *sample_bodies(40), received_at_ms=1_700_000_000_000
        )
        await eventually(lambda: _settled(redis, stream, "recorder", 40))
    assert sorted(entry_id for entry_id, *_ in seen) == sorted(ids)
    assert {(deliveries, s) for _, deliveries, s, _ in seen} == {(1, stream)}
    assert sorted(received for *_, received in seen) == [1_700_000_000_000 + n for n in range(40)]


async def test_consumer_gets_only_the_event_types_it_declared(
    settings: Settings, redis: Redis
) -> None:
    got: list[str] = []

    @consumer("stops", events=[Stopped])
    async def stops(event: Event, ctx: Context) -> None:
        got.append(event.event_type)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [stops]):
        await add_events(redis, settings, *sample_bodies(3, "realTimeTranscriptionStarted"))
        await add_events(redis, settings, *sample_bodies(2, "realTimeTranscriptionStopped"))
        await eventually(lambda: _settled(redis, stream, "stops", 5))
    assert got == ["realTimeTranscriptionStopped"] * 2


async def test_every_consumer_sees_every_event_in_its_own_group(
    settings: Settings, redis: Redis
) -> None:
    seen: Counter[str] = Counter()

    @consumer("first")
    async def first(event: Event, ctx: Context) -> None:
        seen["first"] += 1

    @consumer("second", events=[Started, Stopped])
    async def second(event: Event, ctx: Context) -> None:
        seen["second"] += 1

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [first, second]):
        await add_events(redis, settings, *sample_bodies(10))
        await eventually(lambda: _settled(redis, stream, "first", 10))
        await eventually(lambda: _settled(redis, stream, "second", 10))
    assert seen == {"first": 10, "second": 10}


async def test_handlers_run_concurrently_up_to_the_limit(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(concurrency=4)
    running_now = peak = 0
    release = asyncio.Event()

    @consumer("slowish")
    async def slowish(event: Event, ctx: Context) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await release.wait()
        running_now -= 1

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [slowish]):
        await add_events(redis, settings, *sample_bodies(12))

        async def four_waiting() -> bool:
            return running_now == 4

        await eventually(four_waiting)
        await asyncio.sleep(0.2)  # time for a fifth handler to start, were it allowed
        assert peak == 4
        release.set()
        await eventually(lambda: _settled(redis, stream, "slowish", 12))
    assert peak == 4


async def test_failing_handler_is_retried_with_growing_delays_then_dead_lettered(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(retry_base="40ms", max_deliveries=4, worker_id="w-test")
    attempts: list[tuple[float, int]] = []

    @consumer("flaky")
    async def flaky(event: Event, ctx: Context) -> None:
        attempts.append((time.monotonic(), ctx.deliveries))
        raise RuntimeError("destination said no")

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [flaky]):
        [entry_id] = await add_events(redis, settings, *sample_bodies(1, cause="error"))
        letters = await eventually(lambda: read_all(redis, Keys(settings.key_prefix).dlq))
        assert await pending_ids(redis, stream, "flaky") == []
    assert [deliveries for _, deliveries in attempts] == [1, 2, 3, 4]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(attempts)]
    # Each delay is drawn from the upper half of base * 2^(n-1): its floor doubles.
    floors = [backoff_s(n, 0.04, 60, _Fixed(0.0)) for n in (1, 2, 3)]
    assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), (gaps, floors)
    assert gaps[2] > gaps[0]
    [letter] = letters
    assert (letter.stream, letter.original_id, letter.group) == (stream, entry_id, "flaky")
    assert letter.attempts == 4
    assert "destination said no" in letter.error
    assert letter.worker_id == "w-test"
    assert b'"cause":"error"' in letter.entry.body
    failures = logs.named("handler_failed")
    assert [line["deliveries"] for line in failures] == [1, 2, 3, 4]
    assert [line["level"] for line in failures] == ["warning"] * 3 + ["error"]
    [dead] = logs.named("entry_dead_lettered")
    assert dead["stream_id"] == entry_id
    assert dead["attempts"] == 4


async def test_a_poison_entry_does_not_stall_its_group(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(concurrency=1, retry_base="1s")
    handled: list[str] = []

    @consumer("picky")
    async def picky(event: Event, ctx: Context) -> None:
        if event.call_id == "c-0":
            raise ValueError("poison")
        handled.append(event.call_id)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [picky]):
        [poison, *_] = await add_events(redis, settings, *sample_bodies(30))

        async def all_good_handled() -> bool:
            return len(handled) == 29

        await eventually(all_good_handled)

        # The poison waits for its retry, still pending, while everything after it is done
        # (acknowledged just after its handler returns: the last one may still be on its way).
        async def only_the_poison_pending() -> bool:
            return await pending_ids(redis, stream, "picky") == [poison]

        await eventually(only_the_poison_pending, 5, "only the poison pending")
    assert sorted(handled) == sorted(f"c-{n}" for n in range(1, 30))


async def test_a_slow_consumer_does_not_delay_another_group(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(concurrency=2)
    gate = asyncio.Event()
    fast_seen: list[str] = []

    @consumer("slow")
    async def slow(event: Event, ctx: Context) -> None:
        await gate.wait()

    @consumer("fast")
    async def fast(event: Event, ctx: Context) -> None:
        fast_seen.append(ctx.entry_id)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [slow, fast]):
        await add_events(redis, settings, *sample_bodies(50))
        await eventually(lambda: _settled(redis, stream, "fast", 50))
        slow_group = await group_info(redis, stream, "slow")
        assert slow_group["pending"] + slow_group["lag"] == 50  # none of it done yet
        gate.set()
        await eventually(lambda: _settled(redis, stream, "slow", 50))
    assert len(fast_seen) == 50


async def test_stop_finishes_in_flight_handlers_and_leaves_the_rest_pending(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(concurrency=2, shutdown_timeout="10s", batch_size=10)
    gate = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    @consumer("gated")
    async def gated(event: Event, ctx: Context) -> None:
        started.append(ctx.entry_id)
        await gate.wait()
        finished.append(ctx.entry_id)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [gated]) as worker:
        ids = await add_events(redis, settings, *sample_bodies(8))

        async def two_started() -> bool:
            return len(started) == 2

        await eventually(two_started)
        worker.stop()

        async def stopping() -> bool:
            return bool(logs.named("consumer_stopping"))

        await eventually(stopping)
        gate.set()
    assert sorted(finished) == sorted(started)
    assert len(started) == 2
    assert sorted(await pending_ids(redis, stream, "gated")) == sorted(set(ids) - set(started))
    [stopped] = logs.named("consumer_stopped")
    assert stopped["in_flight_at_stop"] == 2
    assert stopped["cancelled"] == 0


async def test_handlers_past_the_grace_period_are_cancelled_and_stay_pending(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(concurrency=1, shutdown_timeout="200ms")
    cancelled: list[str] = []
    started = asyncio.Event()

    @consumer("stuck")
    async def stuck(event: Event, ctx: Context) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(ctx.entry_id)
            raise

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [stuck]):
        [entry_id] = await add_events(redis, settings, *sample_bodies(1))
        await asyncio.wait_for(started.wait(), 10)
    assert cancelled == [entry_id]
    assert await pending_ids(redis, stream, "stuck") == [entry_id]


async def test_a_lost_group_is_recreated_loudly_and_work_goes_on(
    settings: Settings, redis: Redis, logs: LogLines
) -> None:
    handled: list[str] = []

    @consumer("survivor")
    async def survivor(event: Event, ctx: Context) -> None:
        handled.append(ctx.entry_id)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [survivor]):
        first = await add_events(redis, settings, *sample_bodies(3))
        await eventually(lambda: _settled(redis, stream, "survivor", 3))
        await redis.xgroup_destroy(stream, "survivor")
        later = await add_events(redis, settings, *sample_bodies(3))

        async def later_handled() -> bool:
            return set(later) <= set(handled)

        await eventually(later_handled)
    # Re-created where this worker had read to: the first three are not handled again.
    assert sorted(handled) == sorted(first + later)
    [line] = logs.named("consumer_group_recreated")
    assert line["level"] == "error"
    assert line["stream"] == stream
    assert line["start_id"] == first[-1]


async def test_handler_log_lines_carry_the_entry_context(
    settings: Settings, redis: Redis, logs: LogLines
) -> None:
    @consumer("chatty")
    async def chatty(event: Event, ctx: Context) -> None:
        ctx.log.info("chatty_saw", answer=42)

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [chatty]):
        [entry_id] = await add_events(redis, settings, *sample_bodies(1, transcription_id="t-9"))
        await eventually(lambda: _settled(redis, stream, "chatty", 1))
    [line] = logs.named("chatty_saw")
    assert line["answer"] == 42
    assert (line["consumer"], line["stream_id"], line["call_id"]) == ("chatty", entry_id, "c-0")
    assert line["transcription_id"] == "t-9"
    assert line["deliveries"] == 1


async def test_an_undecodable_entry_is_dead_lettered_without_running_the_handler(
    settings: Settings, redis: Redis
) -> None:
    calls: list[str] = []

    @consumer("strict")
    async def strict(event: Event, ctx: Context) -> None:
        calls.append(ctx.entry_id)

    keys = Keys(settings.key_prefix)
    async with running(settings, redis, [strict]):
        bad = (await redis.xadd(keys.events(), {"type": "x", "body": b"{not json"})).decode()
        [good] = await add_events(redis, settings, *sample_bodies(1))
        letters = await eventually(lambda: read_all(redis, keys.dlq))
        await eventually(lambda: _settled(redis, keys.events(), "strict", 2))
    assert calls == [good]
    [letter] = letters
    assert letter.original_id == bad
    assert "undecodable" in letter.error


async def test_worker_stats_line_reports_what_was_done(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(stats_interval="100ms")

    @consumer("counted")
    async def counted(event: Event, ctx: Context) -> None:
        return None

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [counted]):
        await add_events(redis, settings, *sample_bodies(7))
        await eventually(lambda: _settled(redis, stream, "counted", 7))

        async def stats_logged() -> bool:
            lines = logs.named("worker_stats")
            return sum(line["processed"] for line in lines) == 7 and lines[-1]["pending"] == 0

        await eventually(stats_logged)
    line = logs.named("worker_stats")[-1]
    assert {"failed", "retried", "dead_lettered", "lag", "pending"} <= set(line)
    assert line["consumer"] == "counted"


async def _settled(redis: Redis, stream: str, group: str, count: int) -> bool:
    """`count` entries delivered to the group and none left pending."""
    info = await group_info(redis, stream, group)
    return bool(info) and info["pending"] == 0 and (info.get("entries-read") or 0) >= count


class _Fixed:
    """A random source that always draws the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


async def test_every_shard_is_read_and_acknowledged_on_its_own_stream(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(shards=3)
    seen: list[tuple[str, str]] = []

    @consumer("sharded")
    async def sharded(event: Event, ctx: Context) -> None:
        seen.append((ctx.stream, ctx.entry_id))

    keys = Keys(settings.key_prefix, shards=3)
    async with running(settings, redis, [sharded]):
        added = []
        for shard in range(3):
            ids = await add_events(redis, settings, *sample_bodies(4), shard=shard)
            added += [(keys.events(shard), entry_id) for entry_id in ids]
        for stream in keys.event_streams():
            await eventually(lambda s=stream: _settled(redis, s, "sharded", 4))
    assert sorted(seen) == sorted(added)


async def test_a_handler_failing_because_redis_is_away_keeps_its_delivery_and_is_not_dead_lettered(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path, logs: LogLines
) -> None:
    # The handler writes to a Redis of its own, down until the test starts it: more
    # failures than max_deliveries, none of them the entry's fault.
    settings = make_settings(retry_base="20ms", max_deliveries=2)
    port = free_port()
    target = Redis(port=port, retry=Retry(NoBackoff(), 0))  # each call fails at once
    seen: list[int] = []

    @consumer("copier")
    async def copier(event: Event, ctx: Context) -> None:
        seen.append(ctx.deliveries)
        await target.set(f"copied:{event.call_id}", "1")

    stream = Keys(settings.key_prefix).events()
    try:
        async with running(settings, redis, [copier]):
            [entry_id] = await add_events(redis, settings, *sample_bodies(1))
            await eventually(lambda: len(seen) > 3 * settings.max_deliveries)
            # Redis keeps the same count, so a worker taking the entry over counts alike.
            [row] = await redis.xpending_range(stream, "copier", "-", "+", 10)
            assert row["times_delivered"] == 1
            with EmbeddedValkey(tmp_path / "target", port=port, appendonly=False):
                await eventually(lambda: target.get("copied:c-0"))
                await eventually(lambda: _settled(redis, stream, "copier", 1))
    finally:
        await target.aclose()
    assert set(seen) == {1}
    assert await redis.xlen(Keys(settings.key_prefix).dlq) == 0
    failures = logs.named("handler_failed")
    assert failures
    assert all(line["redis_away"] for line in failures)
    # Backing off as reconnecting does, with a traceback only the first time.
    assert [line["attempt"] for line in failures] == list(range(1, len(failures) + 1))
    assert failures[-1]["retry_in_s"] > failures[0]["retry_in_s"]
    assert ["exception" in line for line in failures] == [True] + [False] * (len(failures) - 1)
    assert entry_id not in await pending_ids(redis, stream, "copier")


async def test_a_worker_without_redis_says_which_address_fails_and_why(
    make_settings: Callable[..., Settings], logs: LogLines
) -> None:
    port = free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    down = Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))

    @consumer("idle")
    async def idle(event: Event, ctx: Context) -> None:
        pass

    try:
        async with running(settings, down, [idle]):
            await eventually(lambda: logs.named("redis_unavailable"))
    finally:
        await down.aclose()
    # redis-py's repr of its errors is only their class ("network:ConnectionError").
    [first, *_] = logs.named("redis_unavailable")
    assert f"127.0.0.1:{port}" in first["error"], first
    assert "ConnectionError" in first["error"], first
