"""The programs as a user runs them: separate processes, real ports, real Valkey."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.embedded import free_port
from tests.bodies import SEED_EXAMPLES, sample_body
from tests.helpers import wait_for
from tests.processes import Program, http_status, processes_mentioning, rtt_env, start_worker

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


def test_receiver_and_worker_as_separate_processes(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = rtt_env(redis_url, prefix, tmp_path, port=str(port))
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    worker = start_worker(env, tmp_path / "worker.log")  # python -m worker
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(base + "/healthz") == 200, what="receiver up")
        url = base + "/realTimeTranscriptionEvents"
        assert http_status(url, SEED_EXAMPLES[0], JSON) == 204
        failing = sample_body("stopped", cause="error", call_id="c-e2e", transcription_id="t-e2e")
        assert http_status(url, failing, JSON) == 204
        [alert] = wait_for(lambda: worker.named("transcription_alert"), what="alert line")
        assert alert["call_id"] == "c-e2e"
        assert alert["cause"] == "error"
        assert alert["component"] == "worker"
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.text()
        assert receiver.stop(signal.SIGINT) == 0, receiver.text()
    assert receiver.named("receiver_stopped")
    assert worker.named("worker_stopped")


def test_serve_runs_everything_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "RTT_PORT": str(port),
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_DATA_DIR": str(tmp_path / "data"),
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
        "RTT_WORKER_METRICS_PORT": "0",
    }
    serve = Program(["rtt", "serve"], env, tmp_path / "serve.log", new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/realTimeTranscriptionEvents"
        # The banner comes once the receiver is ready and the worker consumes.
        wait_for(lambda: "rtt-events is running." in serve.text(), 60, "serve ready")
        assert http_status(f"http://127.0.0.1:{port}/readyz") == 200
        assert (
            f"POST events to  http://127.0.0.1:{port}/realTimeTranscriptionEvents" in serve.text()
        )
        # README's quick start, as a user follows it: the seed's `closed` event, then a
        # second transcription of the call that failed.
        closed, failed = _readme_quick_start_bodies()
        assert http_status(url, closed, JSON) == 204
        assert http_status(url, failed, JSON) == 204
        wait_for(lambda: "transcription_alert" in serve.text(), what="alert in serve output")
        [alert] = [line for line in serve.lines() if line.get("event") == "transcription_alert"]
        assert alert["cause"] == "error"
        assert alert["transcription_id"] == "t-95ac90b3-e9cd80fa-fca7-4d12-9109-2990afe4d8c6"
        # The operator tools find the embedded server without being told its URL.
        stats = subprocess.run(
            [sys.executable, "-m", "rtt", "stats", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            timeout=30,
            check=True,
        )
        assert b'"rtt:events"' in stats.stdout
    finally:
        code = serve.stop(signal.SIGINT)
    assert code == 0, serve.text()
    assert (tmp_path / "data" / "valkey").is_dir()
    assert processes_mentioning(f"RTT_PORT={port}", str(tmp_path)) == []


def _readme_quick_start_bodies() -> list[bytes]:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    bodies = [" ".join(body.split()) for body in re.findall(r"-d '(\{.*?\})'", quick_start, re.S)]
    assert len(bodies) == 2
    return [body.encode() for body in bodies]


@pytest.mark.parametrize("program", ["receiver", "worker"])
def test_a_second_stop_signal_after_a_clean_stop_still_exits_0(
    program: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # A supervisor that signals twice (or a user pressing Ctrl-C twice) must not turn a
    # stop that finished cleanly into death by signal: the receiver dropped its handlers
    # before its last line, and a SIGTERM then killed it (-15).
    port = free_port()
    env = rtt_env(redis_url, prefix, tmp_path, port=str(port))
    log_path = tmp_path / f"{program}.log"
    if program == "receiver":
        proc, started = Program(["rtt", "receiver"], env, log_path), "receiver_listening"
    else:
        proc, started = start_worker(env, log_path), "worker_started"
    stopped = f"{program}_stopped"
    wait_for(lambda: proc.named(started), what=started)
    proc.send(signal.SIGTERM)
    wait_for(lambda: proc.named(stopped), what=stopped, interval_s=0.001)
    proc.send(signal.SIGTERM)
    assert proc.stop(signal.SIGTERM) == 0, proc.text()
