"""A bad setting, as a user meets it: one line naming the variable, exit 2, nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _rtt(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTT_")}
    return subprocess.run(
        [sys.executable, "-m", "rtt", *args],
        env={**clean, "RTT_LOG_FORMAT": "json", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["receiver", "worker", "stats", "serve"])
def test_a_nonsense_redis_url_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    result = _rtt([command], {"RTT_REDIS_URL": "nonsense"}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no banner, no worker_failed line
    [line] = result.stderr.splitlines()
    assert line.startswith(f"rtt {command}: configuration error: RTT_REDIS_URL: got 'nonsense'; ")
    assert not (tmp_path / ".rtt").exists()  # `rtt serve` started no embedded server


@pytest.mark.parametrize("command", ["receiver", "worker"])
def test_no_redis_url_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    """`rtt receiver` and `rtt worker` need a server (`rtt serve` embeds one): say that
    alone, not argparse's whole usage text."""
    result = _rtt([command], {}, tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"rtt {command}: configuration error: RTT_REDIS_URL")


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("receiver", "RTT_ALLOW_CIDRS", "10.0.0.0/33"),
        ("receiver", "RTT_DEDUP_WINDOW", "0s"),
        ("worker", "RTT_STATS_INTERVAL", "0s"),
        ("serve", "RTT_TRUSTED_PROXIES", "proxy.local"),
    ],
)
def test_a_bad_setting_stops_the_command_that_reads_it(
    command: str, variable: str, value: str, tmp_path: Path
) -> None:
    env = {"RTT_REDIS_URL": "redis://127.0.0.1:1/0", variable: value}
    result = _rtt([command], env, tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert f": configuration error: {variable}: got {value!r}; " in line


def test_a_setting_a_command_never_reads_does_not_stop_it(redis_url: str, tmp_path: Path) -> None:
    # Receiver and worker settings are wrong; `rtt stats` reads neither.
    env = {"RTT_REDIS_URL": redis_url, "RTT_PORT": "eighty", "RTT_STATS_INTERVAL": "0s"}
    result = _rtt(["stats", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"streams"' in result.stdout
