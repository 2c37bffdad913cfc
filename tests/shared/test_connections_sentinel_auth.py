"""Sentinels with a password of their own (`requirepass` in sentinel mode), as secured
Sentinel deployments have them: RTT_REDIS_SENTINEL_PASSWORD (or its `_FILE`) reaches the
sentinels, the master keeps the password of RTT_REDIS_URL, and a missing or wrong sentinel
password is one line naming the setting, at once, not a wait for a master that never comes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtt.stats import main as stats_main
from shared.embedded import free_port
from shared.settings import ConfigError, load_settings
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import Program, alerts_flow, http_status
from tests.sentinel import EmbeddedSentinel

pytestmark = [pytest.mark.managed_redis, pytest.mark.slow]
JSON = {"Content-Type": "application/json"}
MASTER_PASSWORD = "master-pass-Qw8"
SENTINEL_PASSWORD = "sentinel-pass-Jh4"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel(
        tmp_path_factory.mktemp("sentinel-auth"),
        password=MASTER_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
    ) as deployment:
        yield deployment


def _env(deployment: EmbeddedSentinel, tmp_path: Path, prefix: str) -> dict[str, str]:
    return {
        "RTT_REDIS_URL": deployment.url,
        "RTT_KEY_PREFIX": prefix,
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
        "RTT_BLOCK": "200ms",
    }


def test_events_flow_with_the_sentinel_password_from_a_file_and_it_is_never_printed(
    secured: EmbeddedSentinel, tmp_path: Path, prefix: str
) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text(SENTINEL_PASSWORD + "\n")
    port = free_port()
    env = {
        **_env(secured, tmp_path, prefix),
        "RTT_REDIS_SENTINEL_PASSWORD_FILE": str(secret),
        "RTT_PORT": str(port),
    }
    receiver, worker = alerts_flow(env, tmp_path, [f"c-sentinel-auth-{n}" for n in range(5)])
    output = worker.text() + receiver.text()
    assert not receiver.named("store_spooling"), receiver.text()[-3000:]
    stats = subprocess.run(
        [sys.executable, "-m", "rtt", "stats", "--json"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert stats.returncode == 0, stats.stderr
    output += (stats.stdout + stats.stderr).decode()
    assert SENTINEL_PASSWORD not in output
    assert MASTER_PASSWORD not in output


@pytest.mark.parametrize(
    ("password", "words"),
    [(None, "asks for a password"), ("wrong-Zz1", "refused RTT_REDIS_SENTINEL_PASSWORD")],
)
def test_worker_with_a_missing_or_wrong_sentinel_password_exits_3_with_one_line(
    secured: EmbeddedSentinel, tmp_path: Path, prefix: str, password: str | None, words: str
) -> None:
    env = {**_env(secured, tmp_path, prefix), "PATH": "/usr/bin:/bin"}
    if password is not None:
        env["RTT_REDIS_SENTINEL_PASSWORD"] = password
    done = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.decode().strip().splitlines()
    assert line.startswith("python -m worker: Sentinel at 127.0.0.1:")
    assert words in line
    assert "RTT_REDIS_SENTINEL_PASSWORD" in line
    assert b"Traceback" not in done.stdout + done.stderr
    assert MASTER_PASSWORD.encode() not in done.stdout + done.stderr
    if password is not None:
        assert password.encode() not in done.stdout + done.stderr


def test_operator_command_with_a_wrong_sentinel_password_is_one_line(
    secured: EmbeddedSentinel, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--redis-url", secured.url, "--redis-sentinel-password", "wrong-Yy2"]
    assert stats_main(flags) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("rtt stats: Sentinel at ")
    assert "refused RTT_REDIS_SENTINEL_PASSWORD" in line
    assert "wrong-Yy2" not in captured.out + captured.err


def test_receiver_with_a_wrong_sentinel_password_says_so_and_spools(
    secured: EmbeddedSentinel, tmp_path: Path, prefix: str
) -> None:
    port = free_port()
    env = {
        **_env(secured, tmp_path, prefix),
        "RTT_REDIS_SENTINEL_PASSWORD": "wrong-Xx3",
        "RTT_PORT": str(port),
    }
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: receiver.named("redis_refused"), 30, "the refusal")
        body = sample_body("stopped", call_id="c-kept")
        assert http_status(base + "/realTimeTranscriptionEvents", body, JSON) == 204
    finally:
        code = receiver.stop(signal.SIGTERM)
    assert code == 0, receiver.text()[-3000:]
    [line] = receiver.named("redis_refused")
    assert "RTT_REDIS_SENTINEL_PASSWORD" in line["error"]
    assert receiver.named("store_spooling")
    assert "wrong-Xx3" not in receiver.text()


def test_sentinel_password_on_a_url_without_sentinels_is_a_configuration_error() -> None:
    env = {"RTT_REDIS_URL": "redis://h:6379/0", "RTT_REDIS_SENTINEL_PASSWORD": "s3cret-cfg"}
    with pytest.raises(ConfigError, match=r"^RTT_REDIS_SENTINEL_PASSWORD: .*not a Sentinel URL"):
        load_settings(env=env)
    with pytest.raises(ConfigError) as error:
        load_settings(env=env)
    assert "s3cret-cfg" not in str(error.value)
