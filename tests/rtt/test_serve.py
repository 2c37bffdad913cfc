"""`rtt serve` as a user meets it: when it says it runs, what it says when it cannot, where
it listens, and whose modules its children import."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from shared.embedded import free_port, running_url
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import Program, console_script, http_status, processes_mentioning, serve_env

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}
BANNER = "rtt-events is running."

_GATE = """
import asyncio
from pathlib import Path

from worker import consumer

HERE = Path(__file__).parent


class Gate:
    async def setup(self, ctx):
        (HERE / "setup-entered").touch()
        while not (HERE / "open").exists():
            await asyncio.sleep(0.05)

    async def handle(self, event, ctx):
        pass


gate = consumer("gate")(Gate())
"""

_SEEN = """
from worker import consumer


@consumer("seen")
async def seen(event, ctx):
    await ctx.redis.sadd("rtt:seen", event.call_id)
"""

_NOT_OURS = "raise SystemExit(\"the user's own {name} was imported instead of rtt-events' one\")\n"


@pytest.fixture(autouse=True)
def _no_host_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTT_HOST", raising=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_banner_waits_until_the_worker_consumes(tmp_path: Path) -> None:
    (tmp_path / "gate_consumer.py").write_text(_GATE)
    port = free_port()
    serve = Program(
        ["rtt", "serve", "--consumer", "gate_consumer:gate"],
        serve_env(tmp_path, port),
        tmp_path / "serve.log",
        cwd=tmp_path,
        script=True,
    )
    try:
        # The receiver answers and the worker is inside a consumer's setup: not running yet.
        wait_for(lambda: (tmp_path / "setup-entered").exists(), 60, "worker in setup")
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "readyz")
        assert BANNER not in serve.text()
        (tmp_path / "open").touch()
        wait_for(lambda: BANNER in serve.text(), 60, "banner once the worker consumes")
    finally:
        assert serve.stop() == 0, serve.text()


@pytest.mark.parametrize(
    "command",
    [["serve"], ["receiver"], ["receiver", "--processes", "2"]],
    ids=["serve", "receiver", "receiver-processes"],
)
def test_port_in_use_is_one_line_naming_it_and_exit_2(
    command: list[str], busy_port: int, tmp_path: Path, redis_url: str
) -> None:
    env = {**serve_env(tmp_path, busy_port), "RTT_HOST": "127.0.0.1"}
    if command[0] == "receiver":
        env["RTT_REDIS_URL"] = redis_url
    result = run(command, env)
    assert result.returncode == 2, result.stderr
    prog = "rtt serve" if command[0] == "serve" else "rtt receiver"
    assert result.stderr.splitlines() == [
        f"{prog}: port {busy_port} on 127.0.0.1 is in use (RTT_PORT)"
    ]
    assert BANNER not in result.stderr
    assert processes_mentioning(str(tmp_path)) == []


def test_port_in_use_is_a_json_error_line_in_a_json_log_too(
    busy_port: int, tmp_path: Path, redis_url: str
) -> None:
    """The log a collector reads says why the receiver stopped, as JSON, beside stderr's
    one line for a person."""
    env = {**serve_env(tmp_path, busy_port), "RTT_HOST": "127.0.0.1", "RTT_REDIS_URL": redis_url}
    result = run(["receiver"], env)
    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    [failed] = [line for line in lines if line["event"] == "receiver_listen_failed"]
    assert failed["level"] == "error"
    assert failed["setting"] == "RTT_PORT"
    assert failed["port"] == busy_port
    assert failed["error"] == f"port {busy_port} on 127.0.0.1 is in use (RTT_PORT)"


def test_worker_metrics_port_in_use_under_serve_is_one_line(busy_port: int, tmp_path: Path) -> None:
    env = {**serve_env(tmp_path, free_port()), "RTT_WORKER_METRICS_PORT": str(busy_port)}
    result = run(["serve"], env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"rtt serve: port {busy_port} on 127.0.0.1 is in use (RTT_WORKER_METRICS_PORT)"
    ]


def test_consumer_that_cannot_be_loaded_stops_serve_with_exit_2(tmp_path: Path) -> None:
    result = run(["serve", "--consumer", "no_such_module:handle"], serve_env(tmp_path, free_port()))
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("rtt serve: consumer 'no_such_module:handle': cannot import")
    assert "Traceback" not in result.stdout + result.stderr
    assert processes_mentioning(str(tmp_path)) == []


def test_serve_listens_on_loopback_unless_told(tmp_path: Path) -> None:
    port = free_port()
    serve = Program(["rtt", "serve"], serve_env(tmp_path, port), tmp_path / "serve.log")
    try:
        wait_for(lambda: BANNER in serve.text(), 60, "banner")
        [listening] = serve.named("receiver_listening")
        assert listening["host"] == "127.0.0.1"
        assert wait_for(lambda: _listening_addresses(port), what="listening") == {"127.0.0.1"}
        assert f"POST events to  http://127.0.0.1:{port}/" in serve.text()
    finally:
        assert serve.stop() == 0, serve.text()


def test_serve_listens_where_rtt_host_says(tmp_path: Path) -> None:
    port = free_port()
    env = {**serve_env(tmp_path, port), "RTT_HOST": "0.0.0.0"}
    serve = Program(["rtt", "serve"], env, tmp_path / "serve.log")
    try:
        wait_for(lambda: BANNER in serve.text(), 60, "banner")
        assert wait_for(lambda: _listening_addresses(port), what="listening") == {"0.0.0.0"}
    finally:
        assert serve.stop() == 0, serve.text()


def test_user_modules_named_like_ours_do_not_replace_them(tmp_path: Path) -> None:
    """A `worker.py`, `receiver/` and `shared/` in the directory `rtt serve` runs from stay
    the user's; the children (and `--processes`' children) import rtt-events' own, and the
    user's consumer module there is still found."""
    (tmp_path / "worker.py").write_text(_NOT_OURS.format(name="worker.py"))
    for package in ("receiver", "shared"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(_NOT_OURS.format(name=package))
    (tmp_path / "my_consumers.py").write_text(_SEEN)
    port = free_port()
    env = {**serve_env(tmp_path, port), "RTT_PROCESSES": "2"}
    serve = Program(
        ["rtt", "serve", "--consumer", "my_consumers:seen"],
        env,
        tmp_path / "serve.log",
        cwd=tmp_path,
        script=True,
    )
    try:
        wait_for(lambda: BANNER in serve.text() or serve.process.poll() is not None, 60, "up")
        assert serve.process.poll() is None, serve.text()
        body = sample_body("stopped", cause="closed", call_id="c-own", transcription_id="t-own")
        url = f"http://127.0.0.1:{port}/realTimeTranscriptionEvents"
        assert http_status(url, body, JSON) == 204
        redis_url = running_url(tmp_path / "data" / "valkey")
        assert redis_url is not None
        with Redis.from_url(redis_url) as client:
            wait_for(lambda: client.sismember("rtt:seen", "c-own"), 30, "the user's consumer")
    finally:
        assert serve.stop() == 0, serve.text()
    assert "was imported instead" not in serve.text()


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a listening TCP socket on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found
