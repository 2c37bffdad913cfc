"""`rtt health`, the containers' health check, against a real receiver and a real worker."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rtt.health import main_process_role
from shared.embedded import free_port
from tests.helpers import wait_for
from tests.processes import Program, http_status, rtt_env, start_worker

pytestmark = pytest.mark.slow


def _health(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtt", "health", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_receiver_check_follows_rtt_port(redis_url: str, prefix: str, tmp_path: Path) -> None:
    port = free_port()
    env = rtt_env(redis_url, prefix, tmp_path, port=str(port))
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 30, "ready")
        healthy = _health("receiver", env=env)
        assert healthy.returncode == 0, healthy.stderr
        assert f":{port}/readyz" in healthy.stdout
        # The same check on a port nothing listens on fails, in one line.
        elsewhere = _health("receiver", env={**env, "RTT_PORT": str(free_port())})
        assert elsewhere.returncode == 1
        assert elsewhere.stderr.count("\n") == 1
        assert elsewhere.stderr.startswith("rtt health: receiver not reachable at http://")
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.text()


def test_worker_check_sees_its_heartbeat_and_its_absence(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = rtt_env(redis_url, prefix, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log", rtt=True)
    try:
        wait_for(lambda: worker.named("worker_started"), 30, "worker started")
        healthy = wait_for(lambda: (r := _health("worker", env=env)).returncode == 0 and r, 30)
        assert f"-{worker.process.pid}" in healthy.stdout
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.text()
    # A stopped worker clears its heartbeat: nothing of this host beats any more.
    gone = _health("worker", env=env)
    assert gone.returncode == 1
    assert "no worker of host" in gone.stderr
    assert gone.stderr.count("\n") == 1


def test_worker_check_names_an_unreachable_redis(prefix: str, tmp_path: Path) -> None:
    env = rtt_env(f"redis://127.0.0.1:{free_port()}/0", prefix, tmp_path)
    result = _health("worker", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("rtt health: Redis unreachable")
    assert "Traceback" not in result.stderr


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _health("receiver", env={"RTT_PORT": "http"})
    assert result.returncode == 2
    assert result.stderr.startswith("rtt health: configuration error: RTT_PORT")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (b"/opt/rtt/bin/python\0/opt/rtt/bin/rtt\0worker\0--consumer\0x:y\0", "worker"),
        (b"/opt/rtt/bin/python\0/opt/rtt/bin/rtt\0receiver\0", "receiver"),
        (b"/usr/bin/python3\0-m\0rtt\0serve\0", "serve"),
        (b"/bin/sh\0-c\0sleep 1\0", None),
    ],
)
def test_role_is_that_of_the_main_process(tmp_path: Path, cmdline: bytes, role: str | None) -> None:
    path = tmp_path / "cmdline"
    path.write_bytes(cmdline)
    assert main_process_role(path) == role


def test_without_a_role_outside_a_container_it_asks_for_one(tmp_path: Path) -> None:
    # PID 1 of this machine is not an `rtt` command.
    if main_process_role() is not None:
        pytest.skip("PID 1 here runs rtt")
    result = _health(env={})
    assert result.returncode == 2
    assert "name it: receiver or worker" in result.stderr
