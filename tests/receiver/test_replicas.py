"""RTT_STORE_REPLICAS: a 204 only once that many replicas have the event, else the spool."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.crc import key_slot

from shared.embedded import EmbeddedValkey
from shared.keys import Keys
from shared.settings import ConfigError, Settings, load_settings
from tests.bodies import sample_body
from tests.cluster import EmbeddedCluster
from tests.helpers import LogLines
from tests.receiver.helpers import live_receiver, metric, post_all

pytestmark = pytest.mark.slow


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[EmbeddedValkey, EmbeddedValkey]]:
    fast_sync = ["--repl-diskless-sync-delay", "0"]
    with EmbeddedValkey(tmp_path / "master", appendonly=False, extra_args=fast_sync) as master:
        replica_args = [*fast_sync, "--replicaof", "127.0.0.1", str(master.port)]
        with EmbeddedValkey(
            tmp_path / "replica", appendonly=False, extra_args=replica_args
        ) as replica:
            with Redis(port=master.port) as client:
                # Online is not enough: the master streams to it after its first ACK.
                deadline = time.monotonic() + 20
                while not (client.set("ready", 1) and client.execute_command("WAIT", 1, 100)):
                    assert time.monotonic() < deadline, "the replica never caught up"
            yield master, replica


async def _post_200_stored(settings: Settings) -> None:
    """200 events through a live receiver: each answered 204, and stored, not spooled."""
    bodies = [sample_body("stopped") for _ in range(200)]
    async with live_receiver(settings) as receiver:
        posted = await post_all(receiver.events_url, bodies, concurrency=8)
        spooled = await metric(receiver.url, "rtt_receiver_requests_total", outcome="spooled")
    assert posted.count() == {204: 200}
    assert spooled == 0


async def test_every_204_is_already_on_the_replica(
    replicated: tuple[EmbeddedValkey, EmbeddedValkey],
    make_settings: Callable[..., Settings],
    prefix: str,
) -> None:
    master, replica = replicated
    settings = make_settings(redis_url=master.url, store_replicas=1)
    await _post_200_stored(settings)
    with Redis(port=replica.port) as client:
        assert client.xlen(Keys(prefix).events()) == 200


async def test_every_204_is_already_on_a_replica_of_its_shard_on_a_cluster(
    cluster: EmbeddedCluster, make_settings: Callable[..., Settings], prefix: str
) -> None:
    # On a cluster WAIT counts the replicas of the node the connection reaches: each
    # node's writes go on one of its connections, followed by WAIT there.
    settings = make_settings(redis_url=cluster.url, store_replicas=1, shards=3)
    await _post_200_stored(settings)
    keys = Keys(prefix, 3)
    on_replicas = 0
    for stream in keys.event_streams():
        master = cluster.master_of_slot(key_slot(stream.encode()))
        [replica] = cluster.replicas_of(master)
        with Redis(port=replica.port) as client:
            client.execute_command("READONLY")
            on_replicas += client.xlen(stream)
    assert on_replicas == 200


async def test_no_replica_in_time_sends_the_event_to_the_spool(
    make_settings: Callable[..., Settings], logs: LogLines
) -> None:
    # The session's Valkey has no replica: WAIT 1 answers 0 when its timeout ends.
    settings = make_settings(store_replicas=1, store_replicas_timeout="100ms")
    async with live_receiver(settings) as receiver:
        posted = await post_all(receiver.events_url, [sample_body("stopped")], concurrency=1)
        spooled = await metric(receiver.url, "rtt_receiver_requests_total", outcome="spooled")
    assert posted.count() == {204: 1}
    assert spooled == 1
    [switch] = logs.named("store_spooling")
    assert "0 of 1 replicas within 100 ms" in switch["reason"]


def test_the_replica_timeout_must_be_shorter_than_the_store_deadline() -> None:
    env = {"RTT_STORE_REPLICAS": "1", "RTT_STORE_TIMEOUT": "1s"}
    with pytest.raises(ConfigError) as raised:
        load_settings(env={**env, "RTT_STORE_REPLICAS_TIMEOUT": "2s"})
    assert str(raised.value) == (
        "RTT_STORE_REPLICAS_TIMEOUT: got '2s'; expected shorter than RTT_STORE_TIMEOUT (1s)"
    )
    assert load_settings(env={**env, "RTT_STORE_REPLICAS_TIMEOUT": "200ms"}).store_replicas == 1
