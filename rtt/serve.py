"""`rtt serve`: the embedded server, a receiver and a worker, started and stopped together.

Whatever stops it (Ctrl-C, SIGTERM, the SIGHUP of a closed terminal, its output pipe
closing, a crash, SIGKILL) stops its children too: they hold a lifeline to it
(`shared.lifeline`). One data directory has one `rtt serve` at a time (`rtt.lock`). The
banner says it runs only once the receiver answers `/readyz` and the worker consumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from shared.connections import RedisRefused, check_redis, create_redis
from shared.credentials import FILE_SUFFIX
from shared.embedded import EmbeddedValkey
from shared.lifeline import Lifeline, python_command
from shared.listen import ListenError, check_listen
from shared.logs import get_logger
from shared.redis_urls import mask_url
from shared.settings import ENV_PREFIX, Settings
from shared.signals import StopSignals

from .lock import DataDirInUse, lock_data_dir
from .readiness import Readiness

__all__ = ["serve"]

PROG = "rtt serve"
# As the worker's: Redis refuses these settings (TLS, password, ACL).
REDIS_REFUSED = 3
LOOPBACK = "127.0.0.1"
log = get_logger()


def listen_host(overrides: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """Loopback unless `--host` or RTT_HOST says otherwise: a demo on a laptop must not
    take events from the whole network. (The receiver alone keeps 0.0.0.0.)"""
    return str(overrides.get("host") or env.get(ENV_PREFIX + "HOST") or LOOPBACK)


def serve(settings: Settings, overrides: Mapping[str, Any]) -> int:
    """Run until SIGINT, SIGTERM or SIGHUP, or until a child dies; leave no process behind.

    Exit 2, with one line, when the configuration cannot work (the data directory is in
    use, a port is taken, a consumer cannot be loaded); 3, with one line, when the external
    Redis refuses these settings (TLS, password, ACL); 1 when a child failed.
    """
    stop = StopSignals()  # first: a signal during the start must stop it cleanly too
    tls_settings = [
        ENV_PREFIX + name.upper()
        for name in ("redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path")
        if getattr(settings, name) is not None
    ]
    if not settings.redis_url and tls_settings:
        return _fail(
            f"configuration error: {tls_settings[0]} is set but RTT_REDIS_URL is not: the "
            "embedded server speaks no TLS; set RTT_REDIS_URL to your rediss:// server"
        )
    settings = msgspec.structs.replace(settings, host=listen_host(overrides, os.environ))
    try:
        lock_fd = lock_data_dir(Path(settings.data_dir))
    except DataDirInUse as exc:
        return _fail(exc)
    try:
        check_listen(settings.host, settings.port, "RTT_PORT")
        if settings.worker_metrics_port:
            port = settings.worker_metrics_port
            check_listen(settings.worker_metrics_listen_host, port, "RTT_WORKER_METRICS_PORT")
        return _Run(settings, overrides, stop, lock_fd).run()
    except ListenError as exc:
        return _fail(exc)
    finally:
        os.close(lock_fd)


class _Run:
    def __init__(
        self, settings: Settings, overrides: Mapping[str, Any], stop: StopSignals, lock_fd: int
    ) -> None:
        self.settings = settings
        self.overrides = overrides
        self.stop = stop
        self.lock_fd = lock_fd
        self.lifeline = Lifeline()
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.failed: tuple[str, int] | None = None

    def run(self) -> int:
        with contextlib.ExitStack() as stack:
            # Undone in reverse: the receiver first (nothing new arrives), then the worker,
            # then the server they both write to. Each step runs even if one before failed.
            stack.callback(self.lifeline.close)
            redis_url = self.settings.redis_url
            if not redis_url:
                embedded = self._start_embedded()
                if embedded is None:
                    return 1
                stack.callback(self._stop_embedded, embedded)
                redis_url = embedded.url
            try:
                readiness = Readiness(self.settings, redis_url)
            except ValueError as exc:
                return _fail(f"RTT_REDIS_URL: {exc}")
            embedded_url = None if self.settings.redis_url else redis_url
            if embedded_url is None:
                refused = asyncio.run(_refused(self.settings))
                if refused is not None:
                    _write(f"{PROG}: {refused}\n")
                    return REDIS_REFUSED
            env = self.lifeline.child_env(self._child_env(embedded_url), prog=PROG)
            worker = self._spawn("worker", env)
            stack.callback(self._stop_child, "worker", worker)
            receiver = self._spawn("receiver", env)
            stack.callback(self._stop_child, "receiver", receiver)
            if asyncio.run(readiness.wait(worker.pid, self._keep_going)):
                self._banner(redis_url)
            while self._keep_going():
                time.sleep(0.1)
        return self._exit_code()

    # --- children -----------------------------------------------------------------------

    def _start_embedded(self) -> EmbeddedValkey | None:
        data_dir = Path(self.settings.data_dir) / "valkey"
        # The server holds the lock too: the directory is not free until it has exited.
        server = EmbeddedValkey(data_dir, pass_fds=(self.lock_fd,))
        try:
            server.start()
        except (RuntimeError, TimeoutError, OSError) as exc:
            server.stop()
            _fail(f"the embedded Valkey server did not start ({exc}); see {data_dir}")
            return None
        _log("info", "embedded_redis_started", url=server.url, data_dir=str(data_dir))
        return server

    def _stop_embedded(self, server: EmbeddedValkey) -> None:
        server.stop()
        _log("info", "embedded_redis_stopped")

    def _child_env(self, embedded_url: str | None) -> dict[str, str]:
        env = dict(os.environ)
        values = {**self.overrides, "host": self.settings.host}
        if embedded_url is not None:
            values["redis_url"] = embedded_url
        for name, value in values.items():
            variable = ENV_PREFIX + name.upper()
            env[variable] = str(value)
            # A flag replaces a secret given as a file; the children must not see both.
            env.pop(variable + FILE_SUFFIX, None)
        return env

    def _spawn(self, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Own sessions: the terminal's Ctrl-C reaches only `rtt serve`, which then stops
        # the children in order. `-P`: a `worker.py` in the current directory is not ours.
        proc = subprocess.Popen(
            python_command(module),
            env=env,
            start_new_session=True,
            pass_fds=(*self.lifeline.pass_fds, self.lock_fd),
        )
        self.children.append((module, proc))
        return proc

    def _stop_child(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        timeout_s = (
            self.settings.shutdown_timeout.total_seconds()
            + self.settings.store_timeout.total_seconds()
            + 10
        )
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _log("error", "child_killed", child=name, pid=proc.pid, after_s=timeout_s)
                proc.kill()
                proc.wait()
        _log("info", "child_stopped", child=name, exit_code=proc.returncode)

    # --- the loop -----------------------------------------------------------------------

    def _keep_going(self) -> bool:
        if self.stop.requested:
            return False
        for name, proc in self.children:
            code = proc.poll()
            if code is not None:
                self.failed = (name, code)
                # Exit 2 is a configuration error the child has explained in one line.
                if code != 2:
                    _log("error", "child_exited", child=name, exit_code=code)
                self.stop.requested = True
                return False
        if _output_gone():
            self.stop.requested = True
            return False
        return True

    def _exit_code(self) -> int:
        if self.failed is None:
            return 0
        return 2 if self.failed[1] == 2 else 1

    def _banner(self, redis_url: str) -> None:
        host = self.settings.host
        shown = "localhost" if host in {"0.0.0.0", "::"} else f"[{host}]" if ":" in host else host
        base = f"http://{shown}:{self.settings.port}"
        _write(
            f"\nrtt-events is running.\n"
            f"  POST events to  {base}{self.settings.path}\n"
            f"  health          {base}/readyz\n"
            f"  Redis           {mask_url(redis_url)}\n"
            f"Press Ctrl-C to stop.\n"
        )


async def _refused(settings: Settings) -> str | None:
    """Why the external Redis refuses these settings, before a child says it (each would,
    in its own words); None when it answers, or is only down (the children wait for it)."""
    redis = create_redis(settings)
    try:
        await check_redis(redis, settings)
    except RedisRefused as exc:
        return str(exc)
    finally:
        await redis.aclose()
    return None


# --- output that may be gone ------------------------------------------------------------


def _fail(problem: object) -> int:
    _write(f"{PROG}: {problem}\n")
    return 2


def _write(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        _silence_output()


def _log(level: str, event: str, **fields: Any) -> None:
    """Log, but never let a closed output (`rtt serve | tee`, then tee gone) stop the
    shutdown half way and leave children behind."""
    try:
        getattr(log, level)(event, **fields)
        sys.stdout.flush()
    except OSError:
        _silence_output()


def _silence_output() -> None:
    """Point stdout and stderr at /dev/null, so later writes (and the interpreter's last
    flush) succeed quietly instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def _output_gone() -> bool:
    """Whether the reader of our stdout or stderr has gone (a pipe whose reader exited)."""
    poller = select.poll()
    for fd in (1, 2):
        poller.register(fd, 0)  # errors and hang-ups are always reported
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
