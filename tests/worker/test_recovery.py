"""Recovery: pending entries of dead workers come back fast, those of live workers stay
with them, counts survive, and a member is never removed while it owns entries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.entries import StreamEntry
from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies, sample_body
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import group_info, pending_ids, running
from worker import recovery
from worker.consumers import Context, consumer
from worker.dlq import read_all
from worker.heartbeat import WorkerIdInUse
from worker.runtime import Worker

FAST_LIVENESS = {"heartbeat_interval": "100ms", "heartbeat_ttl": "400ms"}


def _recorder(name: str, seen: dict[str, int]) -> Any:
    @consumer(name)
    async def record(event: Event, ctx: Context) -> None:
        seen[ctx.entry_id] = ctx.deliveries

    return record


async def _read_as(redis: Redis, stream: str, group: str, member: str, count: int) -> list[str]:
    """Take entries as another worker would, then never acknowledge them (it 'died')."""
    await recovery.create_group(redis, stream, group)
    reply: Any = await redis.xreadgroup(group, member, {stream: ">"}, count=count)
    return [entry_id.decode() for entry_id, _ in reply[0][1]]


async def test_a_dead_workers_entries_are_taken_over_without_waiting_for_claim_idle(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(**FAST_LIVENESS, claim_idle="1h")
    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(6))
    orphaned = await _read_as(redis, stream, "rec", "ghost-1", 6)  # no heartbeat: dead
    seen: dict[str, int] = {}
    async with running(settings, redis, [_recorder("rec", seen)]):
        await eventually(lambda: _all_seen(seen, orphaned))

        async def ghost_removed() -> bool:
            names = [m.name for m in await recovery.members(redis, stream, "rec")]
            return "ghost-1" not in names

        await eventually(ghost_removed)
    assert seen == dict.fromkeys(orphaned, 2)  # the second delivery, counted by Redis
    assert await pending_ids(redis, stream, "rec") == []
    [line] = logs.named("pending_taken_over")
    assert line["from_worker"] == "ghost-1"
    assert line["reason"] == "worker_dead"
    assert line["entries"] == 6


async def test_a_live_workers_entries_stay_with_it_until_its_heartbeat_stops(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(**FAST_LIVENESS, claim_idle="1h")
    keys = Keys(settings.key_prefix)
    stream = keys.events()
    await add_events(redis, settings, *sample_bodies(3))
    await redis.set(keys.heartbeat("rec", "busy-1"), "elsewhere", px=60_000)
    held = await _read_as(redis, stream, "rec", "busy-1", 3)
    seen: dict[str, int] = {}
    async with running(settings, redis, [_recorder("rec", seen)]):
        [fresh] = await add_events(redis, settings, *sample_bodies(1))
        await eventually(lambda: _all_seen(seen, [fresh]))

        async def checked_five_times() -> bool:
            checks = [line for line in logs.named("members_checked") if line["alive"] == 1]
            return len(checks) >= 5

        await eventually(checked_five_times)
        assert set(seen) == {fresh}
        await redis.delete(keys.heartbeat("rec", "busy-1"))
        await eventually(lambda: _all_seen(seen, held))
    assert {seen[entry_id] for entry_id in held} == {2}


async def test_a_restarted_worker_first_handles_what_it_held(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(worker_id="stable-7", claim_idle="1h")
    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(4))
    held = await _read_as(redis, stream, "rec", "stable-7", 4)
    seen: dict[str, int] = {}
    async with running(settings, redis, [_recorder("rec", seen)]):
        await eventually(lambda: _all_seen(seen, held))
    assert seen == dict.fromkeys(held, 2)


async def test_an_entry_delivered_too_often_is_dead_lettered_unrun(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(**FAST_LIVENESS, max_deliveries=2, claim_idle="1h")
    keys = Keys(settings.key_prefix)
    stream = keys.events()
    await add_events(redis, settings, *sample_bodies(1))
    [entry_id] = await _read_as(redis, stream, "rec", "crashy-1", 1)
    # Two more workers took it and crashed on it: three deliveries already.
    for member in ("crashy-2", "crashy-3"):
        await redis.xclaim(stream, "rec", member, 0, [entry_id])
    seen: dict[str, int] = {}
    async with running(settings, redis, [_recorder("rec", seen)]):
        [letter] = await eventually(lambda: read_all(redis, keys.dlq))
        await eventually(lambda: _no_pending(redis, stream, "rec"))
    assert seen == {}
    assert letter.original_id == entry_id
    assert letter.attempts == 4
    assert "no outcome after 3 deliveries" in letter.error


async def test_entries_idle_past_claim_idle_are_taken_even_from_a_live_worker(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings(**FAST_LIVENESS, claim_idle="300ms", handler_timeout="200ms")
    keys = Keys(settings.key_prefix)
    stream = keys.events()
    await add_events(redis, settings, *sample_bodies(2))
    await redis.set(keys.heartbeat("rec", "hung-1"), "alive but stuck", px=60_000)
    held = await _read_as(redis, stream, "rec", "hung-1", 2)
    seen: dict[str, int] = {}
    async with running(settings, redis, [_recorder("rec", seen)]):
        await eventually(lambda: _all_seen(seen, held))
    assert seen == dict.fromkeys(held, 2)
    assert [line["reason"] for line in logs.named("pending_taken_over")] == ["idle"]


async def _deliver_unseen(
    redis: Redis, stream: str, group: str, member: str, count: int
) -> list[str]:
    """Entries delivered to `member` whose reply it never read, as when Redis stops (or a
    connection drops) between serving an XREADGROUP and the reply reaching the worker: in
    one transaction, so the member's own blocked read is served only after, with nothing."""
    async with redis.pipeline(transaction=True) as pipe:
        for n in range(count):
            pipe.xadd(
                stream,
                StreamEntry(
                    "realTimeTranscriptionStopped",
                    sample_body("realTimeTranscriptionStopped", call_id=f"c-unseen-{n}"),
                    n,
                    f"req-{n}",
                ).to_fields(),
            )
        pipe.xreadgroup(group, member, {stream: ">"}, count=count)
        replies: Any = await pipe.execute()
    return [entry_id.decode() for entry_id, _ in replies[-1][0][1]]


async def _drop_connections(redis: Redis, name: str) -> int:
    """Close the worker's connections from the server side (its client name is `name`)."""
    clients: Any = await redis.client_list()
    ids = [c["id"] for c in clients if c.get("name") == name]
    for client_id in ids:
        await redis.client_kill_filter(_id=client_id)
    return len(ids)


async def test_entries_whose_read_reply_was_lost_come_back_once_redis_answers_again(
    make_settings: Callable[..., Settings], redis: Redis, redis_url: str, logs: LogLines
) -> None:
    """Redis had them delivered to this (live) worker, and counts them as its pending ones:
    no other worker takes them before RTT_CLAIM_IDLE, so the worker itself must."""
    settings = make_settings(**FAST_LIVENESS, worker_id="w-lost", claim_idle="1h")
    stream = Keys(settings.key_prefix).events()
    name = f"worker-{settings.key_prefix}"
    worker_redis = Redis.from_url(redis_url, client_name=name)
    seen: dict[str, int] = {}
    try:
        async with running(settings, worker_redis, [_recorder("rec", seen)]):
            [first] = await add_events(redis, settings, *sample_bodies(1))
            await eventually(lambda: _all_seen(seen, [first]))
            unseen = await _deliver_unseen(redis, stream, "rec", "w-lost", 3)
            assert await _drop_connections(redis, name) >= 1
            await eventually(lambda: _all_seen(seen, unseen), what="the unseen entries handled")
            await eventually(lambda: _no_pending(redis, stream, "rec"))
    finally:
        await worker_redis.aclose()
    assert seen == {first: 1, **dict.fromkeys(unseen, 2)}
    [line] = logs.named("pending_taken_over")
    assert (line["reason"], line["from_worker"], line["entries"]) == ("reply_lost", "w-lost", 3)


@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batch"])
async def test_entries_in_hand_are_not_taken_back_after_a_redis_failure(
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    logs: LogLines,
    batch: bool,
) -> None:
    """A handler still running past the idle threshold holds its entries: the worker must
    not claim them for itself a second time."""
    settings = make_settings(**FAST_LIVENESS, worker_id="w-busy", claim_idle="1h")
    name = f"worker-{settings.key_prefix}"
    worker_redis = Redis.from_url(redis_url, client_name=name)
    calls: list[str] = []
    release = asyncio.Event()

    @consumer("rec")
    async def slow(event: Event, ctx: Context) -> None:
        calls.append(ctx.entry_id)
        await release.wait()

    @consumer("rec", batch=True)
    async def slow_batch(events: Sequence[Event], ctxs: Sequence[Context]) -> None:
        calls.extend(ctx.entry_id for ctx in ctxs)
        await release.wait()

    try:
        async with running(settings, worker_redis, [slow_batch if batch else slow]):
            ids = await add_events(redis, settings, *sample_bodies(2))
            await eventually(lambda: _length(calls, 2))
            assert await _drop_connections(redis, name) >= 1
            # Past the idle threshold (the heartbeat TTL, 400 ms) several recovery passes
            # over, with the handlers still running.
            await asyncio.sleep(2)
            release.set()
            await eventually(lambda: _no_pending(redis, Keys(settings.key_prefix).events(), "rec"))
    finally:
        release.set()
        await worker_redis.aclose()
    assert sorted(calls) == sorted(ids)
    assert logs.named("pending_taken_over") == []


async def _length(items: list[str], n: int) -> bool:
    return len(items) >= n


async def test_a_member_that_owns_pending_entries_is_never_removed(
    settings: Settings, redis: Redis
) -> None:
    stream = Keys(settings.key_prefix).events()
    await add_events(redis, settings, *sample_bodies(1))
    await _read_as(redis, stream, "rec", "owner", 1)
    await recovery.create_group(redis, stream, "rec")
    await redis.xreadgroup("rec", "empty", {stream: ">"}, count=1)
    assert not await recovery.remove_member(redis, stream, "rec", "owner")
    assert await recovery.remove_member(redis, stream, "rec", "empty")
    names = {m.name for m in await recovery.members(redis, stream, "rec")}
    assert names == {"owner"}
    assert (await group_info(redis, stream, "rec"))["pending"] == 1


async def test_a_second_process_with_the_same_worker_id_is_refused(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(worker_id="twin", heartbeat_interval="50ms", heartbeat_ttl="200ms")
    seen: dict[str, int] = {}
    async with running(settings, redis, [_recorder("rec", seen)]):
        await eventually(lambda: redis.exists(Keys(settings.key_prefix).heartbeat("rec", "twin")))
        twin = Worker(settings, redis, [_recorder("rec", seen)])
        with pytest.raises(WorkerIdInUse, match="twin"):
            await twin.run()


async def _all_seen(seen: dict[str, int], ids: list[str]) -> bool:
    return set(ids) <= set(seen)


async def _no_pending(redis: Redis, stream: str, group: str) -> bool:
    return await pending_ids(redis, stream, group) == []
