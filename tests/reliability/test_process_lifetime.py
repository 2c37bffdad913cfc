"""`rtt serve` and `receiver --processes` leave no process behind, however they are
stopped (SIGKILL, SIGHUP, their output pipe closing), and one data directory has one
`rtt serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from redis import Redis

from shared.embedded import free_port, running_url
from shared.keys import Keys
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import (
    Program,
    console_script,
    http_status,
    processes_mentioning,
    rtt_env,
    serve_env,
)

# /proc to find what is left, and PR_SET_PDEATHSIG for Valkey.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Linux")]
JSON = {"Content-Type": "application/json"}
BANNER = "rtt-events is running."


def start_serve(tmp_path: Path, port: int, name: str = "serve") -> Program:
    serve = Program(["rtt", "serve"], serve_env(tmp_path, port), tmp_path / f"{name}.log")
    wait_for(lambda: BANNER in serve.text() or serve.process.poll() is not None, 60, "banner")
    assert serve.process.poll() is None, serve.text()
    return serve


def left_behind(tmp_path: Path) -> list[str]:
    """Command lines of the processes still using this test's directories."""
    found = []
    for pid in processes_mentioning(str(tmp_path)):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def post_events(port: int, count: int, tag: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/realTimeTranscriptionEvents"
    call_ids = [f"c-{tag}-{n}" for n in range(count)]
    for call_id in call_ids:
        body = sample_body("stopped", cause="closed", call_id=call_id, transcription_id=call_id)
        assert http_status(url, body, JSON) == 204
    return call_ids


def stored_call_ids(data_dir: Path) -> Counter[str]:
    url = running_url(data_dir / "valkey")
    assert url is not None
    with Redis.from_url(url) as client:
        return Counter(
            msgspec.json.decode(fields[b"body"])["callId"]
            for _, fields in client.xrange(Keys("rtt").events())
        )


def test_sigkill_of_serve_stops_its_children_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    serve = start_serve(tmp_path, port)
    call_ids = post_events(port, 20, "kill")
    serve.stop(signal.SIGKILL)
    # The receiver, the worker and Valkey follow it: nothing holds the port or the AOF.
    wait_for(lambda: not left_behind(tmp_path), 60, "children of a killed rtt serve to exit")
    # The next one starts on the same directory and finds every event, once.
    again = start_serve(tmp_path, port, "serve2")
    try:
        assert stored_call_ids(tmp_path / "data") == Counter(call_ids)
    finally:
        assert again.stop(signal.SIGINT) == 0, again.text()
    assert left_behind(tmp_path) == []


def test_sighup_stops_serve_like_sigterm(tmp_path: Path) -> None:
    serve = start_serve(tmp_path, free_port())
    assert serve.stop(signal.SIGHUP) == 0, serve.text()
    stopped = {line["child"]: line["exit_code"] for line in serve.named("child_stopped")}
    assert stopped == {"receiver": 0, "worker": 0}
    assert serve.named("embedded_redis_stopped")
    assert left_behind(tmp_path) == []


@pytest.mark.parametrize("then", [None, signal.SIGINT], ids=["alone", "then-ctrl-c"])
def test_serve_whose_output_pipe_closes_stops_everything(
    then: signal.Signals | None, tmp_path: Path
) -> None:
    """`rtt serve | tee log`, and tee is gone (alone, or with the Ctrl-C that stopped it):
    nothing may go on running unseen."""
    env = {**os.environ, **serve_env(tmp_path, free_port())}
    serve = subprocess.Popen(
        [console_script(), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert serve.stdout is not None
    seen = b""
    # Everything has started and said so: nothing writes to the pipe on its own now.
    started = (BANNER.encode(), b"receiver_listening", b"consumer_group_created")
    while not all(word in seen for word in started):
        line = serve.stdout.readline()
        assert line, seen.decode()
        seen += line
    serve.stdout.close()
    try:
        if then is not None:
            serve.send_signal(then)
        serve.wait(60)
    finally:
        if serve.poll() is None:
            serve.kill()
    wait_for(lambda: not left_behind(tmp_path), 60, "children of rtt serve to exit")


def test_second_serve_on_one_data_directory_exits_2_naming_the_first(tmp_path: Path) -> None:
    port = free_port()
    first = start_serve(tmp_path, port)
    try:
        env = {**os.environ, **serve_env(tmp_path, free_port())}
        command = [console_script(), "serve"]
        second = subprocess.run(command, env=env, capture_output=True, timeout=60)
        assert second.returncode == 2
        assert second.stdout == b""
        [line] = second.stderr.decode().splitlines()
        assert line.startswith("rtt serve: ")
        assert f"pid {first.process.pid}" in line
        assert "RTT_DATA_DIR" in line
        # The first still runs, and the operator commands still find its server.
        post_events(port, 1, "first")
        stats = subprocess.run(
            [console_script(), "stats", "--json"], env=env, capture_output=True, timeout=30
        )
        assert stats.returncode == 0, stats.stderr
        assert b'"rtt:events"' in stats.stdout
    finally:
        assert first.stop(signal.SIGINT) == 0, first.text()
    assert left_behind(tmp_path) == []


def test_receiver_processes_die_with_their_supervisor(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = rtt_env(redis_url, "rtt", tmp_path, port=str(port))
    supervisor = Program(["receiver", "--processes", "2"], env, tmp_path / "receiver.log")
    wait_for(lambda: len(supervisor.named("receiver_listening")) == 2, 60, "two processes")
    children = [line["pid"] for line in supervisor.named("receiver_listening")]
    supervisor.stop(signal.SIGKILL)
    wait_for(lambda: not any(_alive(pid) for pid in children), 60, "receiver processes to exit")
    assert left_behind(tmp_path) == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
