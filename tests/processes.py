"""Start the real programs as child processes and read what they print."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Program", "console_script", "http_status", "processes_mentioning", "rtt_env"]


def rtt_env(redis_url: str, prefix: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """Environment of a receiver or worker child on loopback: JSON logs, no worker /metrics,
    a spool under `tmp_path`; `settings` add RTT_* variables by their setting names."""
    env = {
        "RTT_REDIS_URL": redis_url,
        "RTT_KEY_PREFIX": prefix,
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
    }
    env.update({f"RTT_{name.upper()}": value for name, value in settings.items()})
    return env


def console_script(name: str = "rtt") -> str:
    """The installed command itself, as a user runs it (not `python -m`, which puts the
    current directory on the import path)."""
    return str(Path(sys.executable).parent / name)


class Program:
    """A child process (`python -m ...`, or `script` run as it is) whose stdout goes to a
    file."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        new_session: bool = True,
        cwd: Path | None = None,
        script: bool = False,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, **env}
        command = [console_script(args[0]), *args[1:]] if script else [sys.executable, "-m", *args]
        self.process = subprocess.Popen(
            command,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
            cwd=cwd,
        )

    def lines(self) -> list[dict[str, Any]]:
        result = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                result.append(json.loads(raw))
            except ValueError:
                continue
        return result

    def named(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.process.wait(timeout_s)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def http_status(
    url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> int:
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def processes_mentioning(*needles: str) -> list[int]:
    """Pids (other than this one) whose command line, environment or working directory
    contains a needle: with a test's own tmp path as the needle, the processes it left
    behind (Valkey rewrites its command line, but works in its `--dir`)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        with contextlib.suppress(OSError):
            blob += os.readlink(proc / "cwd").encode()
        if any(needle.encode() in blob for needle in needles):
            found.append(int(proc.name))
    return found
