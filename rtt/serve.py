"""`rtt serve`: the embedded server, a receiver and a worker, started and stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.credentials import FILE_SUFFIX
from shared.embedded import EmbeddedValkey
from shared.logs import get_logger
from shared.redis_urls import mask_url
from shared.settings import ENV_PREFIX, Settings
from shared.signals import StopSignals

__all__ = ["serve"]

log = get_logger()


def _child_env(overrides: Mapping[str, Any], embedded_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    values = dict(overrides)
    if embedded_url is not None:
        values["redis_url"] = embedded_url
    for name, value in values.items():
        variable = ENV_PREFIX + name.upper()
        env[variable] = str(value)
        # A flag replaces a secret given as a file; the children must not see both.
        env.pop(variable + FILE_SUFFIX, None)
    return env


def _spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own sessions: the terminal's Ctrl-C reaches only `rtt serve`, which then stops the
    # children in order (receiver first, so nothing new arrives, then worker, then Redis).
    return subprocess.Popen([sys.executable, "-m", module], env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("child_killed", pid=proc.pid, after_s=timeout_s)
            proc.kill()
            proc.wait()
    return proc.returncode


def serve(settings: Settings, overrides: Mapping[str, Any]) -> int:
    """Run until SIGINT or SIGTERM, or until a child dies; leave no process behind."""
    stop = StopSignals()

    embedded: EmbeddedValkey | None = None
    redis_url = settings.redis_url
    tls_settings = [
        ENV_PREFIX + name.upper()
        for name in ("redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path")
        if getattr(settings, name) is not None
    ]
    if not redis_url and tls_settings:
        print(
            f"rtt serve: configuration error: {tls_settings[0]} is set but RTT_REDIS_URL is "
            f"not: the embedded server speaks no TLS; set RTT_REDIS_URL to your rediss:// server",
            file=sys.stderr,
        )
        return 2
    if not redis_url:
        data_dir = Path(settings.data_dir) / "valkey"
        embedded = EmbeddedValkey(data_dir).start()
        redis_url = embedded.url
        log.info("embedded_redis_started", url=redis_url, data_dir=str(data_dir))
    env = _child_env(overrides, embedded.url if embedded is not None else None)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    exit_code = 0
    try:
        children.append(("receiver", _spawn("receiver", env)))
        children.append(("worker", _spawn("worker", env)))
        host = "localhost" if settings.host in {"0.0.0.0", "::"} else settings.host
        print(
            f"\nrtt-events is running.\n"
            f"  POST events to  http://{host}:{settings.port}{settings.path}\n"
            f"  health          http://{host}:{settings.port}/readyz\n"
            f"  Redis           {mask_url(redis_url)}\n"
            f"Press Ctrl-C to stop.\n",
            file=sys.stderr,
            flush=True,
        )
        while not stop.requested:
            for name, proc in children:
                if proc.poll() is not None:
                    log.error("child_exited", child=name, exit_code=proc.returncode)
                    exit_code = 1
                    stop.requested = True
            time.sleep(0.1)
    finally:
        timeout_s = settings.shutdown_timeout.total_seconds() + 10
        for name, proc in children:
            code = _stop(proc, timeout_s)
            log.info("child_stopped", child=name, exit_code=code)
        if embedded is not None:
            embedded.stop()
            log.info("embedded_redis_stopped")
    return exit_code
