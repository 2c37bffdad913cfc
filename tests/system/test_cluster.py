"""Sharded streams on a real three-node Redis Cluster: receiver and worker as processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from shared.embedded import free_port
from shared.keys import Keys
from tests.bodies import sample_body
from tests.cluster import EmbeddedCluster
from tests.helpers import wait_for
from tests.processes import Program, http_status, start_worker

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


def test_sharded_events_flow_through_a_cluster(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "RTT_REDIS_URL": cluster.url,
        "RTT_SHARDS": "3",
        "RTT_PORT": str(port),
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
        "RTT_BLOCK": "200ms",
    }
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    worker = start_worker(env, tmp_path / "worker.log", rtt=True)
    calls = [f"c-cluster-{n}" for n in range(12)]
    try:
        url = f"http://127.0.0.1:{port}/realTimeTranscriptionEvents"
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, what="receiver")
        for call in calls:
            body = sample_body("stopped", cause="connection-error", call_id=call)
            assert http_status(url, body, JSON) == 204, receiver.text()
        wait_for(lambda: len(worker.named("transcription_alert")) == len(calls), 30, "12 alerts")
    finally:
        worker_code = worker.stop(signal.SIGTERM)
        receiver_code = receiver.stop(signal.SIGTERM)
    assert (worker_code, receiver_code) == (0, 0), worker.text() + receiver.text()
    assert sorted(a["call_id"] for a in worker.named("transcription_alert")) == sorted(calls)
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
