"""A Sentinel client from `create_redis` writes to the new master once the sentinels name
it, even on a connection that was busy when the master changed: after `SENTINEL FAILOVER`
the old master stays writable for seconds, and what it takes then is discarded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from shared.connections import MASTER_CHECK_S, create_redis
from shared.settings import load_settings
from tests.sentinel import MASTER_NAME, EmbeddedSentinel

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel(tmp_path / "sentinel") as running:
        yield running


def _all_name_another(deployment: EmbeddedSentinel, old: int) -> bool:
    for node in deployment.sentinels:
        with node.client() as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        if int(port) == old:
            return False
    return True


async def test_a_connection_busy_during_a_failover_then_writes_to_the_new_master(
    sentinel: EmbeddedSentinel,
) -> None:
    old = sentinel.master_port()
    client = create_redis(load_settings(env={"RTT_REDIS_URL": sentinel.url}))
    try:
        await client.ping()
        # One connection busy across the hand-over: a blocking read on the old master.
        busy = asyncio.create_task(client.xread({"nothing": "$"}, block=6000))
        await asyncio.sleep(0.2)
        with Redis(port=sentinel.sentinels[0].port, socket_timeout=5) as admin:
            admin.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        await asyncio.to_thread(
            sentinel.wait_for,
            lambda: _all_name_another(sentinel, old),
            "every sentinel naming the new master",
            20,
        )
        # Another command meanwhile: the client learns of the new master.
        await asyncio.sleep(MASTER_CHECK_S)
        await client.ping()
        # It times out on the old master, or is unblocked when that becomes a replica.
        with contextlib.suppress(ResponseError):
            await busy
        await client.set("written-after", "1")
        with Redis(port=sentinel.master_port(), socket_timeout=5) as new_master:
            assert new_master.get("written-after") == b"1"
    finally:
        await client.aclose()
