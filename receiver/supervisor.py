"""`--processes N`: N receiver processes serving one port (SO_REUSEPORT), kept running.

Each child is `python -P -m receiver` with the same flags and environment, plus its slot
`i/N`, which names its spool directory `p<i>`: a child that dies is started again in the
same slot and drains what it left. The children share prometheus-client's multiprocess
directory, so a scrape of any of them reports the sum. They hold a lifeline to this
process (`shared.lifeline`): if it dies, even by SIGKILL, they stop too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence

from prometheus_client import multiprocess

from shared.lifeline import Lifeline, python_command
from shared.logs import get_logger
from shared.settings import Settings
from shared.signals import StopSignals

__all__ = ["supervise"]

log = get_logger()
# A slot whose child keeps dying this soon after its start (port taken, bad configuration)
# would only die again: after a few such deaths in a row the whole receiver stops instead.
_MIN_UPTIME_S = 5.0
_QUICK_DEATHS_MAX = 3


# A child that exits with this status found its configuration wrong (port in use...):
# starting it again would only fail again, so the supervisor stops with the same status.
_CONFIG_ERROR = 2


def _start(
    argv: Sequence[str], index: int, processes: int, env: dict[str, str], lifeline: Lifeline
) -> subprocess.Popen[bytes]:
    args = python_command("receiver", *argv, "--slot", f"{index}/{processes}")
    return subprocess.Popen(args, env=env, pass_fds=lifeline.pass_fds)


def supervise(settings: Settings, argv: Sequence[str], *, prog: str = "rtt receiver") -> int:
    """Run `settings.processes` children until SIGTERM, SIGINT or SIGHUP; 0 if all stopped
    cleanly, 2 if a child found the configuration wrong."""
    processes = settings.processes
    metrics_dir = tempfile.mkdtemp(prefix="rtt-receiver-metrics-")
    lifeline = Lifeline()
    env = lifeline.child_env({**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}, prog)
    stop = StopSignals()
    children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    quick_deaths = dict.fromkeys(range(processes), 0)
    exit_code = 0
    try:
        for index in range(processes):
            children[index] = (_start(argv, index, processes, env, lifeline), time.monotonic())
        log.info("receiver_supervising", processes=processes, port=settings.port)
        while not stop.requested:
            time.sleep(0.1)
            for index, (child, started) in list(children.items()):
                code = child.poll()
                if code is None:
                    continue
                multiprocess.mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]
                log.error("receiver_process_exited", process=index, pid=child.pid, exit_code=code)
                if code == _CONFIG_ERROR:
                    exit_code = _CONFIG_ERROR
                    stop.requested = True
                    break
                quick = time.monotonic() - started < _MIN_UPTIME_S
                quick_deaths[index] = quick_deaths[index] + 1 if quick else 0
                if quick_deaths[index] >= _QUICK_DEATHS_MAX:
                    log.error(
                        "receiver_process_keeps_dying", process=index, deaths=quick_deaths[index]
                    )
                    exit_code = 1
                    stop.requested = True
                    break
                children[index] = (
                    _start(argv, index, processes, env, lifeline),
                    time.monotonic(),
                )
    finally:
        for child, _ in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        grace_s = (
            settings.shutdown_timeout.total_seconds() + settings.store_timeout.total_seconds() + 10
        )
        for index, (child, _) in children.items():
            try:
                code = child.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.error("receiver_process_killed", process=index, pid=child.pid, after_s=grace_s)
                child.kill()
                code = child.wait()
            if code != 0 and exit_code == 0:
                exit_code = 1
        lifeline.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("receiver_supervisor_stopped", exit_code=exit_code)
    return exit_code
