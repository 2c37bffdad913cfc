"""TLS on Sentinel and Cluster URLs: receiver and worker as processes, events end to end.

The same settings as for one node (CA, client certificate): the factory takes them to the
sentinels and the master, and to every cluster node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.embedded import free_port
from tests.processes import alerts_flow, rtt_env
from tests.tlsredis import Certificates, TlsCluster, TlsSentinel

pytestmark = [pytest.mark.managed_redis, pytest.mark.slow]


def _events_flow(url: str, certs: Certificates, tmp_path: Path, prefix: str, shards: int) -> None:
    env = rtt_env(
        url,
        prefix,
        tmp_path,
        redis_tls_ca_path=str(certs.ca),
        redis_tls_cert_path=str(certs.client_cert),
        redis_tls_key_path=str(certs.client_key),
        shards=str(shards),
        port=str(free_port()),
        block="200ms",
    )
    receiver, _ = alerts_flow(env, tmp_path, [f"c-tls-{n}" for n in range(6)])
    # Stored in Redis, not left in the spool.
    assert not receiver.named("store_spooling"), receiver.text()[-3000:]


def test_events_flow_through_a_tls_cluster(
    tls_cluster: TlsCluster, certs: Certificates, tmp_path: Path, prefix: str
) -> None:
    _events_flow(tls_cluster.url, certs, tmp_path, prefix, shards=3)


def test_events_flow_through_tls_sentinel(
    require_tls_redis: None, certs: Certificates, tmp_path: Path, prefix: str
) -> None:
    with TlsSentinel(tmp_path / "tls-sentinel", certs) as tls_sentinel:
        _events_flow(tls_sentinel.url, certs, tmp_path, prefix, shards=1)
