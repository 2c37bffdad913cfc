"""A cluster client from `create_redis` rides through the loss of a master: on the
product's own event loop (uvloop), with commands in flight from many tasks as in a worker,
every failure is one of REDIS_DOWN, and once the replica is promoted the same client
reaches it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.crc import key_slot

from shared.connections import REDIS_DOWN, create_redis
from shared.loop import run
from shared.settings import load_settings
from tests.cluster import EmbeddedCluster

pytestmark = pytest.mark.slow

KEY = "failover-probe"
TASKS = 16


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path / "cluster", replicas=1, node_timeout_ms=1000) as running:
        yield running


async def _read_until_answered(client: AsyncRedis, down: list[str]) -> object:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await client.get(KEY)
        except REDIS_DOWN as exc:
            down.append(type(exc).__name__)
            assert time.monotonic() < deadline, "no promoted replica answered"
            await asyncio.sleep(0.01)


async def _read_through_failover(cluster: EmbeddedCluster) -> list[object]:
    master = cluster.master_of_slot(key_slot(KEY.encode()))
    with Redis(port=master.port, socket_timeout=5) as direct:
        direct.set(KEY, "kept")
        # The replica has it: the promotion cannot lose it.
        assert direct.wait(1, 5000) == 1
    client = create_redis(load_settings(env={"RTT_REDIS_URL": cluster.url}))
    down: list[str] = []
    try:
        # Connections to the master, back in the client's pool.
        await asyncio.gather(*(client.get(KEY) for _ in range(TASKS)))
        master.kill()
        return await asyncio.gather(*(_read_until_answered(client, down) for _ in range(TASKS)))
    finally:
        await client.aclose()


def test_a_cluster_client_fails_as_redis_down_then_follows_the_promoted_replica(
    cluster: EmbeddedCluster,
) -> None:
    assert run(_read_through_failover(cluster)) == [b"kept"] * TASKS
