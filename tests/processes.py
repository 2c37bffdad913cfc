"""Start the real programs as child processes and read what they print; `start_worker` is
the one way to start a worker child."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.bodies import sample_body
from tests.helpers import wait_for

__all__ = [
    "Program",
    "alerts_flow",
    "console_script",
    "http_status",
    "processes_mentioning",
    "rtt_env",
    "serve_env",
    "start_worker",
    "worker_processes",
]


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


def serve_env(tmp_path: Path, port: int) -> dict[str, str]:
    """Environment of an `rtt serve` child: its embedded server's data and the spool under
    `tmp_path`, the receiver on `port`, JSON logs, no worker /metrics."""
    return {
        "RTT_PORT": str(port),
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_DATA_DIR": str(tmp_path / "data"),
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
    }


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


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    *args: str,
    worker_id: str | None = None,
    rtt: bool = False,
    script: bool = False,
    cwd: Path | None = None,
) -> Program:
    """A worker child: `python -m worker`, or with `rtt` the `rtt worker` command (`python
    -m rtt worker`; with `script` too, the installed `rtt` itself); `args` on its command
    line (`--consumer ...`), RTT_WORKER_ID set to `worker_id` when one is given."""
    command = ["rtt", "worker"] if rtt else ["worker"]
    child_env = {**env, "RTT_WORKER_ID": worker_id} if worker_id is not None else env
    return Program([*command, *args], child_env, log_path, cwd=cwd, script=script)


@contextlib.asynccontextmanager
async def worker_processes(
    env: Mapping[str, str], tmp_path: Path, count: int
) -> AsyncIterator[list[Program]]:
    """`count` worker children for an async test, worker ids w0, w1... (logs w0.log...);
    stopped with SIGTERM at the end, each exiting 0 unless the test killed it.

    Stopping goes through a thread: a worker finishing its alerts may be waiting on a sink
    served by this test's event loop, which must keep running meanwhile.
    """
    programs = [start_worker(env, tmp_path / f"w{n}.log", worker_id=f"w{n}") for n in range(count)]
    try:
        yield programs
    finally:
        codes = await asyncio.gather(
            *(asyncio.to_thread(p.stop, signal.SIGTERM, 30.0) for p in programs)
        )
        for program, code in zip(programs, codes, strict=True):
            if code not in (0, -signal.SIGKILL):
                raise AssertionError(f"worker exited with {code}:\n{program.text()[-3000:]}")


def alerts_flow(
    env: Mapping[str, str], tmp_path: Path, calls: Sequence[str]
) -> tuple[Program, Program]:
    """`rtt receiver` and `rtt worker` as processes on `env` (its RTT_PORT): a failed Stopped
    posted for each call, each answered 204, then one alert for each call; both stopped
    with SIGTERM, each exiting 0. Returns (receiver, worker), for what else a test reads."""
    base = f"http://127.0.0.1:{env['RTT_PORT']}"
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    worker = start_worker(env, tmp_path / "worker.log", rtt=True)
    try:
        wait_for(lambda: http_status(base + "/readyz") == 200, 30, "receiver ready")
        for call in calls:
            body = sample_body("stopped", cause="connection-error", call_id=call)
            status = http_status(base + "/realTimeTranscriptionEvents", body, _JSON)
            assert status == 204, receiver.text()[-3000:]
        wait_for(lambda: len(worker.named("transcription_alert")) == len(calls), 30, "alerts")
    finally:
        worker_code = worker.stop(signal.SIGTERM)
        receiver_code = receiver.stop(signal.SIGTERM)
    assert (worker_code, receiver_code) == (0, 0), worker.text()[-3000:] + receiver.text()[-3000:]
    assert sorted(a["call_id"] for a in worker.named("transcription_alert")) == sorted(calls)
    return receiver, worker


_JSON = {"Content-Type": "application/json"}


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
