"""A three-node Valkey cluster on loopback, for the tests that prove sharding works."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

from redis import Redis

from shared.embedded import free_port, valkey_binary

__all__ = ["EmbeddedCluster"]

_SLOTS = 16384


class EmbeddedCluster:
    """Three masters, slots split evenly, no replicas."""

    def __init__(self, data_dir: Path, nodes: int = 3) -> None:
        self.data_dir = data_dir
        self.ports = [free_port() for _ in range(nodes)]
        # Explicit bus ports: the default (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedCluster:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for n, (port, bus) in enumerate(zip(self.ports, self.bus_ports, strict=True)):
            args = [
                str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", f"nodes-{n}.conf", "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "no", "--logfile", f"node-{n}.log",
            ]  # fmt: skip
            self.processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        clients = [self._client(port, timeout_s) for port in self.ports]
        per_node = _SLOTS // len(clients)
        for n, client in enumerate(clients):
            last = _SLOTS - 1 if n == len(clients) - 1 else (n + 1) * per_node - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", n * per_node, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0], self.bus_ports[0])
        deadline = time.monotonic() + timeout_s
        while not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        for client in clients:
            client.close()
        return self

    def _client(self, port: int, timeout_s: float) -> Redis:
        client = Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                return client
            except OSError:
                pass
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
