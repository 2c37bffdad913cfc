"""Sentinel failover under load: the receiver and the worker follow the master it names.

A master, a replica and three sentinels on loopback. While `rtt send` posts at a steady
rate, the master is handed over (`SENTINEL FAILOVER`) or killed (SIGKILL, then restarted:
it comes back as a replica). Every 204 must be stored once, every alert sent once (with
RTT_STORE_REPLICAS, after a forced failover too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.reliability.failover import Load, run_failover
from tests.sentinel import MASTER_NAME, EmbeddedSentinel

pytestmark = pytest.mark.slow

QUICK = Load(count=500, rate=100)
FULL = Load(count=5000, rate=250)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel(tmp_path / "sentinel") as running:
        yield running


def _forced_failover(deployment: EmbeddedSentinel) -> None:
    old = deployment.master_port()
    with Redis(port=deployment.sentinels[0].port, socket_timeout=5) as client:
        client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    deployment.wait_for(lambda: deployment.master_port() != old, "a new master", 20)


def _killed_master(deployment: EmbeddedSentinel) -> None:
    old = deployment.node(deployment.master_port())
    old.kill()
    deployment.wait_for(lambda: deployment.master_port() != old.port, "a new master", 20)
    time.sleep(1)
    # The operator restarts the dead node; the sentinels make it a replica of the new master.
    old.start()


FAULTS = {"failover": _forced_failover, "sigkill": _killed_master}


async def _run(
    sentinel: EmbeddedSentinel, tmp_path: Path, fault: str, replicas: int, load: Load
) -> None:
    result = await run_failover(
        f"sentinel {fault}, RTT_STORE_REPLICAS={replicas}",
        sentinel.url,
        tmp_path,
        load,
        lambda: FAULTS[fault](sentinel),
        store_replicas=str(replicas),
    )
    result.check_every_204_kept(load, replicas)
    if fault == "sigkill" or replicas:
        # After SENTINEL FAILOVER the old master takes writes for about a second before the
        # sentinels name the new one. With replicas the worker's acknowledgements and the
        # alerts' once-claims and records count only once a replica has them, so none is
        # lost with it: nothing left pending, no alert sent twice. Without, they may be
        # (README, "Redis Sentinel and Cluster"); a lost acknowledgement leaves its entry
        # pending until RTT_CLAIM_IDLE.
        assert result.consumed, f"pending {result.pending}: {result.extra['pending_rows']}"
        assert result.alerts_twice == []


@pytest.mark.parametrize("replicas", [0, 1])
@pytest.mark.parametrize("fault", ["failover", "sigkill"])
async def test_sentinel_failover_under_load_loses_and_repeats_nothing(
    sentinel: EmbeddedSentinel, tmp_path: Path, fault: str, replicas: int
) -> None:
    await _run(sentinel, tmp_path, fault, replicas, QUICK)


@pytest.mark.long
@pytest.mark.timeout(300)
@pytest.mark.parametrize("replicas", [0, 1])
@pytest.mark.parametrize("fault", ["failover", "sigkill"])
async def test_sentinel_failover_under_full_load_loses_and_repeats_nothing(
    sentinel: EmbeddedSentinel, tmp_path: Path, fault: str, replicas: int
) -> None:
    await _run(sentinel, tmp_path, fault, replicas, FULL)
