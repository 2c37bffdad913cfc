"""TLS on Sentinel and Cluster URLs: receiver and worker as processes, events end to end.

The same settings as for one node (CA, client certificate): the factory takes them to the
sentinels and the master, and to every cluster node.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded import free_port
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import Program, http_status, start_worker
from tests.tlsredis import Certificates, TlsCluster, TlsSentinel

pytestmark = [pytest.mark.managed_redis, pytest.mark.slow]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def tls_cluster(
    require_tls_redis: None, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsCluster]:
    with TlsCluster(tmp_path_factory.mktemp("tls-cluster"), certs) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_sentinel(
    require_tls_redis: None, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsSentinel]:
    with TlsSentinel(tmp_path_factory.mktemp("tls-sentinel"), certs) as sentinel:
        yield sentinel


def _events_flow(url: str, certs: Certificates, tmp_path: Path, prefix: str, shards: int) -> None:
    port = free_port()
    env = {
        "RTT_REDIS_URL": url,
        "RTT_REDIS_TLS_CA_PATH": str(certs.ca),
        "RTT_REDIS_TLS_CERT_PATH": str(certs.client_cert),
        "RTT_REDIS_TLS_KEY_PATH": str(certs.client_key),
        "RTT_KEY_PREFIX": prefix,
        "RTT_SHARDS": str(shards),
        "RTT_PORT": str(port),
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
        "RTT_BLOCK": "200ms",
    }
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    worker = start_worker(env, tmp_path / "worker.log", rtt=True)
    calls = [f"c-tls-{n}" for n in range(6)]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(base + "/readyz") == 200, 30, "receiver ready")
        for call in calls:
            body = sample_body("stopped", cause="connection-error", call_id=call)
            assert http_status(base + "/realTimeTranscriptionEvents", body, JSON) == 204
        wait_for(lambda: len(worker.named("transcription_alert")) == len(calls), 30, "alerts")
    finally:
        worker_code = worker.stop(signal.SIGTERM)
        receiver_code = receiver.stop(signal.SIGTERM)
    assert (worker_code, receiver_code) == (0, 0), worker.text()[-3000:] + receiver.text()[-3000:]
    assert sorted(a["call_id"] for a in worker.named("transcription_alert")) == sorted(calls)
    # Stored in Redis, not left in the spool.
    assert not receiver.named("store_spooling"), receiver.text()[-3000:]


def test_events_flow_through_a_tls_cluster(
    tls_cluster: TlsCluster, certs: Certificates, tmp_path: Path, prefix: str
) -> None:
    _events_flow(tls_cluster.url, certs, tmp_path, prefix, shards=3)


def test_events_flow_through_tls_sentinel(
    tls_sentinel: TlsSentinel, certs: Certificates, tmp_path: Path, prefix: str
) -> None:
    _events_flow(tls_sentinel.url, certs, tmp_path, prefix, shards=1)
