"""A Valkey cluster on loopback: three masters, optionally a replica for each, for the tests
that prove sharding works and that a failover loses nothing."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.crc import key_slot

from shared.embedded import EmbeddedValkey, Lifetime, free_port

__all__ = ["EmbeddedCluster"]

_SLOTS = 16384


class EmbeddedCluster(Lifetime):
    """`nodes` masters with the slots split evenly, each with `replicas` replicas."""

    def __init__(
        self, data_dir: Path, nodes: int = 3, *, replicas: int = 0, node_timeout_ms: int = 15000
    ) -> None:
        total = nodes * (1 + replicas)
        # Explicit bus ports: the default (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(total)]
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            "--repl-diskless-sync-delay",
            "0",
        ]
        self.nodes = [
            self.make_node(data_dir / f"node-{n}", [*args, "--cluster-port", str(bus)])
            for n, bus in enumerate(self.bus_ports)
        ]
        self.masters = self.nodes[:nodes]

    def make_node(self, data_dir: Path, args: list[str]) -> EmbeddedValkey:
        return EmbeddedValkey(data_dir, appendonly=False, extra_args=args)

    @property
    def url(self) -> str:
        scheme = urlsplit(self.nodes[0].url).scheme
        return f"{scheme}+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start(timeout_s)
        clients = [node.client(timeout_s=1) for node in self.nodes]
        try:
            per_node = _SLOTS // len(self.masters)
            for n in range(len(self.masters)):
                last = _SLOTS - 1 if n == len(self.masters) - 1 else (n + 1) * per_node - 1
                clients[n].execute_command("CLUSTER", "ADDSLOTSRANGE", n * per_node, last)
            first = self.nodes[0]
            for client in clients[1:]:
                client.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", first.port, self.bus_ports[0]
                )
            self._wait(clients, timeout_s)
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients]
            for n, client in enumerate(clients[len(self.masters) :]):
                master = n % len(self.masters)
                self._wait_known(client, ids[master], timeout_s)
                client.execute_command("CLUSTER", "REPLICATE", ids[master])
            for n in range(len(self.nodes) - len(self.masters)):
                master = n % len(self.masters)
                self._wait_synced(clients[master], master * per_node, timeout_s)
            self._wait(clients, timeout_s)
        finally:
            for client in clients:
                client.close()
        return self

    def replicas_of(self, master: EmbeddedValkey) -> list[EmbeddedValkey]:
        """The running nodes that replicate `master` now."""
        with Redis(port=master.port, socket_timeout=1) as client:
            master_id = client.execute_command("CLUSTER", "MYID").decode()
            replicas = client.execute_command("CLUSTER", "REPLICAS", master_id)
        ports = {int(line.split()[1].split(b"@")[0].rsplit(b":", 1)[1]) for line in replicas}
        return [node for node in self.nodes if node.port in ports]

    def master_of_slot(self, slot: int) -> EmbeddedValkey:
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with node.client(timeout_s=1) as client:
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        [owner] = [n for n in self.nodes if n.port == int(master[1])]
                        return owner
        raise LookupError(f"no node serves slot {slot}")

    @staticmethod
    def _wait(clients: list[Redis], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    @staticmethod
    def _wait_known(client: Redis, node_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while node_id.encode() not in client.execute_command("CLUSTER", "NODES"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} not known in time")
            time.sleep(0.05)

    @staticmethod
    def _wait_synced(master: Redis, first_slot: int, timeout_s: float) -> None:
        """A write reaches its replica (online is not enough: streaming starts at its ACK)."""
        key = next(
            f"ready-{n}" for n in range(100_000) if key_slot(f"ready-{n}".encode()) == first_slot
        )
        deadline = time.monotonic() + timeout_s
        while not (master.set(key, 1) and master.execute_command("WAIT", 1, 100)):
            if time.monotonic() > deadline:
                raise TimeoutError("replica not in sync in time")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
