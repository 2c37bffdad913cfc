"""Redis killed, restarted or frozen under a stream of deliveries: nothing lost, nothing twice.

Each test owns a Valkey process it can kill (SIGKILL) or freeze (SIGSTOP), a live receiver
on a loopback port, and concurrent clients; it prints what it sent, what was answered 204
and what reached the stream.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from shared.embedded import EmbeddedValkey
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_body
from tests.helpers import LogLines, eventually
from tests.receiver.helpers import live_receiver, metric, post_all, stream_call_ids

pytestmark = pytest.mark.slow


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey(tmp_path / "valkey", appendonly=True) as server:
        yield server


async def _fsync_always(url: str) -> None:
    # The test is about the receiver, not about the 1 s that `appendfsync everysec` may
    # lose on a crash: with `always`, what Redis acknowledged survives SIGKILL.
    client = Redis.from_url(url)
    try:
        await client.config_set("appendfsync", "always")
    finally:
        await client.aclose()


def _bodies(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        sample_body(rng.choice(["started", "stopped", "available"]), rng=rng) for _ in range(count)
    ]


async def _wait_drained(url: str, redis: Redis, keys: Keys, expected: int) -> None:
    """Bounded wait until the spool is empty and every accepted event is on the stream."""

    async def drained() -> bool:
        depth = await metric(url, "rtt_receiver_spool_depth")
        return depth == 0 and sum((await stream_call_ids(redis, keys)).values()) >= expected

    await eventually(drained, 30, "the spool drained onto the stream")


async def test_redis_killed_and_restarted_under_load_loses_and_duplicates_nothing(
    valkey: EmbeddedValkey, make_settings: Callable[..., Settings], logs: LogLines, prefix: str
) -> None:
    await _fsync_always(valkey.url)
    settings = make_settings(redis_url=valkey.url, store_timeout="500ms")
    bodies = _bodies(20_000, seed=1)  # more than the clients can send before `stop`
    stop = asyncio.Event()
    async with live_receiver(settings) as receiver:
        sending = asyncio.create_task(
            post_all(receiver.events_url, bodies, concurrency=8, stop=stop)
        )
        await asyncio.sleep(0.5)
        valkey.kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(valkey.start)
        await _fsync_always(valkey.url)
        await asyncio.sleep(0.5)
        stop.set()
        posted = await sending
        redis = Redis.from_url(valkey.url)
        try:
            accepted = posted.with_status(204)
            await _wait_drained(receiver.url, redis, Keys(prefix), len(accepted))
            on_stream = await stream_call_ids(redis, Keys(prefix))
            spooled = await metric(receiver.url, "rtt_receiver_requests_total", outcome="spooled")
        finally:
            await redis.aclose()
    sent = list(posted.statuses)
    print(
        f"\nredis SIGKILL: sent {len(sent)}, answered 204 {len(accepted)} "
        f"({spooled:.0f} from the spool), on stream {sum(on_stream.values())} "
        f"({len(on_stream)} distinct)"
    )
    assert posted.count() == {204: len(sent)}
    assert logs.named("store_spooling"), "the fault never reached the store"
    assert logs.named("spool_drained")
    assert spooled > 0
    assert set(on_stream) == {body_call_id(body) for body in sent}
    assert set(on_stream.values()) == {1}


async def test_redis_frozen_answers_from_the_spool_in_time_and_drains_after(
    valkey: EmbeddedValkey, make_settings: Callable[..., Settings], logs: LogLines, prefix: str
) -> None:
    settings = make_settings(redis_url=valkey.url, store_timeout="300ms")
    before, during = _bodies(50, seed=2), _bodies(150, seed=3)
    async with live_receiver(settings) as receiver:
        first = await post_all(receiver.events_url, before)
        valkey.signal(signal.SIGSTOP)
        try:
            # Bandwidth gives up after 15 s (post_all's client timeout): a 204 is in time.
            frozen = await post_all(receiver.events_url, during, concurrency=8)
            ready = await metric(receiver.url, "rtt_receiver_spool_depth")
        finally:
            valkey.signal(signal.SIGCONT)
        redis = Redis.from_url(valkey.url)
        try:
            await _wait_drained(receiver.url, redis, Keys(prefix), len(before) + len(during))
            on_stream = await stream_call_ids(redis, Keys(prefix))
        finally:
            await redis.aclose()
    print(
        f"\nredis SIGSTOP: sent {len(before) + len(during)}, answered 204 "
        f"{len(first.with_status(204)) + len(frozen.with_status(204))}, "
        f"on stream {sum(on_stream.values())}; spool depth while frozen {ready:.0f}"
    )
    assert first.count() == {204: len(before)}
    assert frozen.count() == {204: len(during)}
    assert ready == len(during)
    assert logs.named("store_spooling")
    assert set(on_stream) == {body_call_id(body) for body in before + during}
    assert set(on_stream.values()) == {1}


def body_call_id(body: bytes) -> str:
    call_id: str = msgspec.json.decode(body)["callId"]
    return call_id
