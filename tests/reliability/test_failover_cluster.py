"""Cluster failover under load: three masters with a replica each; one master is killed
(SIGKILL) while `rtt send` posts, its replica takes over its slots, the dead node comes
back as a replica. Every 204 must be stored once and every alert sent once, on every shard.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from shared.keys import Keys
from tests.cluster import EmbeddedCluster
from tests.reliability.failover import PREFIX, Load, run_failover

pytestmark = pytest.mark.slow

QUICK = Load(count=500, rate=100)
FULL = Load(count=5000, rate=250)
SHARDS = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path / "cluster", replicas=1, node_timeout_ms=1000) as running:
        yield running


def _kill_master(cluster: EmbeddedCluster) -> None:
    slot = key_slot(Keys(PREFIX, SHARDS).events(0).encode())
    victim = cluster.master_of_slot(slot)
    victim.kill()
    deadline = time.monotonic() + 30
    while cluster.master_of_slot(slot) is victim:
        assert time.monotonic() < deadline, "no replica took over the slots"
        time.sleep(0.05)
    time.sleep(1)
    # The operator restarts the dead node: it rejoins as a replica of the one promoted.
    victim.start()


async def _run(cluster: EmbeddedCluster, tmp_path: Path, replicas: int, load: Load) -> None:
    result = await run_failover(
        f"cluster master SIGKILL, RTT_STORE_REPLICAS={replicas}",
        cluster.url,
        tmp_path,
        load,
        lambda: _kill_master(cluster),
        store_replicas=str(replicas),
        shards=str(SHARDS),
    )
    result.check_every_204_kept(load, replicas)
    assert result.alerts_twice == []
    # The worker rode through and consumed every shard to the end.
    assert result.consumed, f"pending {result.pending}: {result.extra['pending_rows']}"


@pytest.mark.parametrize("replicas", [0, 1])
async def test_cluster_master_killed_under_load_loses_and_repeats_nothing(
    cluster: EmbeddedCluster, tmp_path: Path, replicas: int
) -> None:
    await _run(cluster, tmp_path, replicas, QUICK)


@pytest.mark.long
@pytest.mark.timeout(300)
@pytest.mark.parametrize("replicas", [0, 1])
async def test_cluster_master_killed_under_full_load_loses_and_repeats_nothing(
    cluster: EmbeddedCluster, tmp_path: Path, replicas: int
) -> None:
    await _run(cluster, tmp_path, replicas, FULL)
