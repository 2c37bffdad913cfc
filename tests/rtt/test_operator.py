"""The operator commands when Redis is not there, or their reader leaves: one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from shared.embedded import free_port
from shared.entries import StreamEntry
from shared.keys import Keys
from tests.bodies import sample_body
from worker.dlq import DeadLetter

pytestmark = pytest.mark.slow

COMMANDS = [["stats"], ["dlq", "list"], ["silence", "list"], ["groups", "list"]]


def _rtt(
    args: list[str], cwd: Path, env: dict[str, str], stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTT_")}
    return subprocess.run(
        [sys.executable, "-m", "rtt", *args],
        cwd=cwd,
        env={**clean, **env},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_naming_the_url(args: list[str], tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://ops:s3cret@127.0.0.1:{port}/0"
    result = _rtt(args, tmp_path, {"RTT_REDIS_URL": url})
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"rtt {args[0]}: cannot reach Redis at redis://ops:***@127.0.0.1:{port}/0: "
    )
    assert f"connecting to 127.0.0.1:{port}" in line
    assert "s3cret" not in line


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_stale_embedded_server_url_is_one_line(args: list[str], tmp_path: Path) -> None:
    # `rtt serve` was killed: its URL file is left, the server is gone.
    port = free_port()
    (tmp_path / ".rtt" / "valkey").mkdir(parents=True)
    (tmp_path / ".rtt" / "valkey" / "url").write_text(f"redis://127.0.0.1:{port}/0\n")
    result = _rtt(args, tmp_path, {})
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in line
    assert "`rtt serve`" in line


def test_dlq_show_into_a_closed_pipe_is_quiet(
    redis_url: str, prefix: str, sync_redis: SyncRedis, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    body = sample_body("stopped", cause="error")
    letter = DeadLetter(
        stream=keys.events(),
        original_id="1-0",
        group="billing",
        worker_id="w1",
        error="RuntimeError('sink down')",
        attempts=5,
        failed_at_ms=1,
        entry=StreamEntry("realTimeTranscriptionStopped", body, 1, "req-1"),
    )
    dlq_id = sync_redis.xadd(keys.dlq, dict(letter.to_fields())).decode()
    # The reader is gone before the first write, as `| head` is after its lines: every
    # write fails with EPIPE, whatever the timing.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _rtt(
            ["dlq", "show", dlq_id],
            tmp_path,
            {"RTT_REDIS_URL": redis_url, "RTT_KEY_PREFIX": prefix},
            stdout=write_end,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 1


def test_version(tmp_path: Path) -> None:
    result = _rtt(["--version"], tmp_path, {})
    assert result.returncode == 0
    assert result.stdout == f"rtt {version('rtt-events')}\n"
