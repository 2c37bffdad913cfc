"""Session fixtures for the tests against a real TLS Redis (Debian's redis-server).

Imported by the test modules that need them; they skip when the server is missing or was
built without TLS (`make test-integrations` installs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tlsredis import REDIS_SERVER, Certificates, TlsCluster, TlsRedis, make_certificates

__all__ = [
    "certs",
    "expired_tls_server",
    "require_tls_redis",
    "tls_cluster",
    "tls_env",
    "tls_server",
]


def _missing() -> str | None:
    if not os.access(REDIS_SERVER, os.X_OK):
        return f"{REDIS_SERVER} is not installed (make test-integrations installs it)"
    return None


@pytest.fixture(scope="session")
def require_tls_redis() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("RTT_TEST_INTEGRATIONS") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def tls_server(
    require_tls_redis: None, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedis]:
    """TLS only, and only for clients with a certificate our CA signed."""
    with TlsRedis(tmp_path_factory.mktemp("tls-redis"), certs, auth_clients=True) as server:
        yield server


@pytest.fixture(scope="session")
def tls_cluster(
    require_tls_redis: None, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsCluster]:
    """Three TLS nodes in one cluster, for clients with a certificate our CA signed."""
    with TlsCluster(tmp_path_factory.mktemp("tls-cluster"), certs) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def expired_tls_server(
    require_tls_redis: None, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedis]:
    with TlsRedis(
        tmp_path_factory.mktemp("tls-redis-expired"),
        certs,
        auth_clients=False,
        server_cert=certs.expired_server_cert,
        server_key=certs.expired_server_key,
    ) as server:
        yield server


def tls_env(server: TlsRedis, certs: Certificates, **extra: str) -> dict[str, str]:
    """The settings a user sets for a TLS Redis that checks client certificates."""
    return {
        "RTT_REDIS_URL": server.url,
        "RTT_REDIS_TLS_CA_PATH": str(certs.ca),
        "RTT_REDIS_TLS_CERT_PATH": str(certs.client_cert),
        "RTT_REDIS_TLS_KEY_PATH": str(certs.client_key),
        **extra,
    }


def cert_paths(certs: Certificates, *, client: str = "client") -> dict[str, Path]:
    return {
        "redis_tls_ca_path": certs.ca,
        "redis_tls_cert_path": getattr(certs, f"{client}_cert"),
        "redis_tls_key_path": getattr(certs, f"{client}_key"),
    }
