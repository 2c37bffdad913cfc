"""A three-node Valkey cluster on loopback, for the tests that prove sharding works."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from redis import Redis

from shared.embedded import EmbeddedValkey, free_port

__all__ = ["EmbeddedCluster"]

_SLOTS = 16384


class EmbeddedCluster:
    """Three masters, slots split evenly, no replicas."""

    def __init__(self, data_dir: Path, nodes: int = 3) -> None:
        # Explicit bus ports: the default (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.nodes = [
            EmbeddedValkey(
                data_dir / f"node-{n}",
                appendonly=False,
                extra_args=["--cluster-enabled", "yes", "--cluster-port", str(bus)],
            )
            for n, bus in enumerate(self.bus_ports)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start(timeout_s)
        clients = [Redis(host="127.0.0.1", port=node.port, socket_timeout=1) for node in self.nodes]
        try:
            per_node = _SLOTS // len(clients)
            for n, client in enumerate(clients):
                last = _SLOTS - 1 if n == len(clients) - 1 else (n + 1) * per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", n * per_node, last)
            first = self.nodes[0]
            for client in clients[1:]:
                client.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", first.port, self.bus_ports[0]
                )
            deadline = time.monotonic() + timeout_s
            while not all(
                b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
