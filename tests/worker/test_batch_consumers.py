"""Batch consumers: a read's worth of events per call, each event's outcome its own."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import group_info, pending_ids, running
from worker.consumers import Context, consumer
from worker.dlq import read_all


async def _settled(redis: Redis, stream: str, group: str, count: int) -> bool:
    info = await group_info(redis, stream, group)
    return bool(info) and info["pending"] == 0 and (info.get("entries-read") or 0) >= count


def test_a_batch_consumer_keeps_a_per_event_handle() -> None:
    calls: list[int] = []

    @consumer("audit", batch=True)
    async def audit(events: Sequence[Event], ctxs: Sequence[Context]) -> None:
        calls.append(len(events))

    assert audit.handle_batch is not None
    assert audit.handle is not audit.handle_batch


async def test_events_come_many_per_call_each_with_its_own_context(
    settings: Settings, redis: Redis
) -> None:
    sizes: list[int] = []
    seen: list[tuple[str, int, str]] = []

    @consumer("batched", batch=True)
    async def batched(events: Sequence[Event], ctxs: Sequence[Context]) -> None:
        sizes.append(len(events))
        seen.extend(
            (c.entry_id, c.deliveries, e.call_id) for e, c in zip(events, ctxs, strict=True)
        )

    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(60))
    async with running(settings, redis, [batched]):
        await eventually(lambda: _settled(redis, stream, "batched", 60))
    assert sorted(entry_id for entry_id, _, _ in seen) == sorted(ids)
    assert {deliveries for _, deliveries, _ in seen} == {1}
    assert sorted(call_id for *_, call_id in seen) == sorted(f"c-{n}" for n in range(60))
    assert max(sizes) > 1  # the backlog came in batches, not one event a call


async def test_one_failed_event_is_retried_and_dead_lettered_alone(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(retry_base="20ms", max_deliveries=3)
    handled: Counter[str] = Counter()

    @consumer("picky", batch=True)
    async def picky(events: Sequence[Event], ctxs: Sequence[Context]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for event in events:
            handled[event.call_id] += 1
            outcomes.append(ValueError("poison") if event.call_id == "c-3" else None)
        return outcomes

    stream = Keys(settings.key_prefix).events()
    ids = await add_events(redis, settings, *sample_bodies(10))
    async with running(settings, redis, [picky]):
        letters = await eventually(lambda: read_all(redis, Keys(settings.key_prefix).dlq))
        await eventually(lambda: _settled(redis, stream, "picky", 10))
    [letter] = letters
    assert letter.original_id == ids[3]
    assert letter.attempts == 3
    assert "poison" in letter.error
    assert handled == {f"c-{n}": 3 if n == 3 else 1 for n in range(10)}
    failures = logs.named("handler_failed")
    assert {line["stream_id"] for line in failures} == {ids[3]}
    assert [line["deliveries"] for line in failures] == [1, 2, 3]


async def test_a_raise_fails_every_event_of_the_call(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(retry_base="20ms")
    deliveries: Counter[int] = Counter()

    @consumer("flaky", batch=True)
    async def flaky(events: Sequence[Event], ctxs: Sequence[Context]) -> None:
        first = any(ctx.deliveries == 1 for ctx in ctxs)
        deliveries.update(ctx.deliveries for ctx in ctxs)
        if first:
            raise RuntimeError("down for a moment")

    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(8))
    async with running(settings, redis, [flaky]):
        await eventually(lambda: _settled(redis, stream, "flaky", 8))
        assert await pending_ids(redis, stream, "flaky") == []
    assert deliveries[1] == 8
    assert deliveries[2] == 8


async def test_a_call_past_its_timeout_fails_its_events(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(retry_base="20ms")

    @consumer("slow", batch=True, timeout=0.2)
    async def slow(events: Sequence[Event], ctxs: Sequence[Context]) -> None:
        if any(ctx.deliveries == 1 for ctx in ctxs):
            await asyncio.sleep(30)

    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(3))
    async with running(settings, redis, [slow]):
        await eventually(lambda: _settled(redis, stream, "slow", 3))
    failures = logs.named("handler_failed")
    assert len(failures) == 3
    assert all(line["timed_out"] for line in failures)


async def test_a_wrong_number_of_outcomes_fails_the_call_naming_it(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(retry_base="20ms")

    @consumer("miscounts", batch=True)
    async def miscounts(events: Sequence[Event], ctxs: Sequence[Context]) -> list[None]:
        return [] if ctxs[0].deliveries == 1 else [None] * len(events)

    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(1))
    async with running(settings, redis, [miscounts]):
        await eventually(lambda: _settled(redis, stream, "miscounts", 1))
    [failure] = logs.named("handler_failed")
    assert "returned 0 outcomes for 1 events" in failure["error"]
