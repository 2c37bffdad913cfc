"""Shared flushes: whatever one item carries, every waiter gets its own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from receiver.batching import RedisWriter, StoreItem
from receiver.spool import Spool, read_records
from receiver.store import Outcome, Store, StoreUnavailable
from shared.keys import Keys
from tests.helpers import LogLines, eventually


def _item(keys: Keys, n: int, value: Any = b"body") -> StoreItem:
    return StoreItem(keys.events(), {"n": n, "body": value}, keys.dedup(0, f"id-{n}"))


# What hiredis cannot pack: a lone surrogate (a header byte aiohttp kept), a foreign type.
POISONS = ["bw-\udcff", object()]


@pytest.mark.parametrize("poison", POISONS, ids=["surrogate", "object"])
async def test_a_poisoned_item_fails_alone_and_its_flush_mates_are_stored(
    redis: Redis, prefix: str, tmp_path: Path, poison: Any
) -> None:
    keys = Keys(prefix)
    store = Store(redis, spool_dir=tmp_path / "spool", batch_max=64)
    await store.start()
    try:
        items = [_item(keys, n, poison if n % 10 == 3 else b"body") for n in range(200)]
        outcomes = await asyncio.gather(
            *(store.put(item) for item in items), return_exceptions=True
        )
    finally:
        await store.close()
    stored = {int(fields[b"n"]) for _, fields in await redis.xrange(keys.events())}
    refused = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, StoreUnavailable)}
    poisoned = {n for n in range(200) if n % 10 == 3}
    print(f"\nstored {len(stored)}, refused {sorted(refused)}")
    assert refused == poisoned
    assert stored == set(range(200)) - poisoned
    assert {outcome for n, outcome in enumerate(outcomes) if n not in poisoned} == {Outcome.STORED}
    # Redis did not fail: the store never switched to the spool for a bad item.
    assert store.mode == "redis"
    assert not list((tmp_path / "spool").rglob("*.seg"))


async def test_a_flush_that_fails_for_any_reason_answers_every_waiter(
    redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(prefix)
    writer = RedisWriter(redis, dedup_ttl_ms=60_000, timeout_s=2.0, batch_max=16)

    async def broken(calls: Any) -> list[object]:
        raise RuntimeError("a bug inside the flush")

    monkeypatch.setattr(writer, "_send", broken)
    results = await asyncio.gather(
        *(writer.put(_item(keys, n)) for n in range(50)), return_exceptions=True
    )
    assert len(results) == 50
    assert all(isinstance(result, Exception) for result in results)
    await writer.close()


async def test_a_spooled_record_redis_cannot_take_is_set_aside_and_the_rest_drains(
    redis: Redis, prefix: str, tmp_path: Path, logs: LogLines
) -> None:
    keys = Keys(prefix)
    directory = tmp_path / "spool"
    spool = Spool(directory)
    await spool.open()
    for n in range(5):
        # A value no version of the receiver writes (None): hiredis cannot pack it.
        value = None if n == 2 else b"body"
        fields = {"n": n, "body": value}
        payload = msgspec.msgpack.encode([keys.events(), fields, keys.dedup(0, f"id-{n}"), None])
        await spool.append(payload, 1_700_000_000_000 + n)
    await spool.close()
    store = Store(redis, spool_dir=directory)
    await store.start()
    try:
        await eventually(
            lambda: not store.spool_depth and store.mode == "redis", 30, "the spool drained"
        )  # the drainer runs in the background
    finally:
        await store.close()
    stored = [int(fields[b"n"]) for _, fields in await redis.xrange(keys.events())]
    assert stored == [0, 1, 3, 4]
    [line] = logs.named("spool_record_set_aside")
    records, torn = read_records(await asyncio.to_thread(Path(line["file"]).read_bytes))
    assert torn is None
    assert [msgspec.msgpack.decode(r.payload)[1]["n"] for r in records] == [2]
