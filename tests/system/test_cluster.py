"""Sharded streams on a real three-node Redis Cluster: receiver and worker as processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from shared.embedded import free_port
from shared.keys import Keys
from tests.cluster import EmbeddedCluster
from tests.processes import alerts_flow, rtt_env

pytestmark = pytest.mark.slow


def test_sharded_events_flow_through_a_cluster(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    env = rtt_env(cluster.url, "rtt", tmp_path, shards="3", port=str(free_port()), block="200ms")
    calls = [f"c-cluster-{n}" for n in range(12)]
    alerts_flow(env, tmp_path, calls)
    keys = Keys("rtt", 3)
    client = RedisCluster.from_url("redis://" + cluster.url.split("://", 1)[1])
    try:
        lengths = {stream: client.xlen(stream) for stream in keys.event_streams()}
        # Every call on the stream its callId hashes to, and the shards on different nodes.
        for call in calls:
            assert lengths[keys.events(keys.shard_of(call))] >= 1
        assert sum(lengths.values()) == len(calls)
        slots = {client.keyslot(stream) for stream in keys.event_streams()}
        assert len(slots) == 3
        nodes = {client.get_node_from_key(stream).port for stream in keys.event_streams()}
        assert len(nodes) > 1
    finally:
        client.close()
