"""Consumers found the two ways a user adds them, in a real `python -m worker` process:
an entry point of an installed package, and `--consumer pkg.module:name`.

The modules written here have names no user would pick (`rtt_tests_...`): the worker puts
its working directory first on the import path, where a user's own `my_consumers.py`, as
README's walkthrough has them write, would otherwise replace the test's module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from shared.keys import Keys
from tests.bodies import sample_bodies
from tests.helpers import add_events_sync, wait_for
from tests.processes import start_worker
from tests.worker.helpers import REPO, worker_env

pytestmark = pytest.mark.slow

_PLUGIN = """
from worker import consumer


@consumer("{name}")
async def handle(event, ctx):
    await ctx.redis.sadd(ctx.key_prefix + ":seen:{name}", ctx.entry_id)
"""


# README's walkthrough, as a user leaves it in the directory they run things from.
_USERS_OWN = """
from worker import Context, Rejected, Stopped, consumer


@consumer("failed-transcriptions", events=[Stopped, Rejected])
async def failed_transcriptions(event, ctx):
    await ctx.redis.incr(f"{ctx.key_prefix}:failed:{event.account_id}")
"""


def _installed_package(site: Path) -> None:
    """What `pip install` leaves behind: the package, and a dist-info naming the entry point."""
    package = site / "rtt_tests_demo_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_PLUGIN.format(name="demo"))
    info = site / "rtt_tests_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rtt-tests-demo-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[rtt_events.consumers]\ndemo = rtt_tests_demo_plugin:handle\n"
    )
    (info / "RECORD").write_text("")


def test_entry_point_and_command_line_consumers_both_run(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: Redis
) -> None:
    _installed_package(tmp_path / "site")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "rtt_tests_local_consumers.py").write_text(_PLUGIN.format(name="local"))
    # Started where a user keeps their own consumers (say, the repository root): theirs
    # come first on the path, and must not take the place of the test's.
    users_dir = tmp_path / "users_dir"
    users_dir.mkdir()
    (users_dir / "my_consumers.py").write_text(_USERS_OWN)
    env = worker_env(redis_url, prefix)
    env["PYTHONPATH"] = f"{tmp_path / 'site'}:{tmp_path / 'local'}:{REPO}"
    worker = start_worker(
        env,
        tmp_path / "worker.log",
        "--consumer",
        "rtt_tests_local_consumers:handle",
        worker_id="w-plugins",
        cwd=users_dir,
    )
    try:
        [started] = wait_for(lambda: worker.named("worker_started"), 30, "worker up")
        ids = add_events_sync(sync_redis, prefix, *sample_bodies(3))
        for name in ("demo", "local"):
            key = f"{prefix}:seen:{name}"
            wait_for(lambda k=key: sync_redis.scard(k) == 3, 30, f"{name} handled all")
            assert {m.decode() for m in sync_redis.smembers(key)} == set(ids)
    finally:
        assert worker.stop() == 0, worker.text()
    assert started["consumers"] == ["alerts", "demo", "local"]
    groups = {g["name"].decode() for g in sync_redis.xinfo_groups(Keys(prefix).events())}
    assert groups == {"alerts", "demo", "local"}


def test_a_consumer_that_cannot_load_stops_the_worker_with_its_name(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "rtt_tests_typo.py").write_text("x = 1\n")
    env = worker_env(redis_url, prefix)
    env["PYTHONPATH"] = f"{tmp_path}:{REPO}"
    result = subprocess.run(
        [sys.executable, "-m", "worker", "--consumer", "rtt_tests_typo:handle"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "consumer 'rtt_tests_typo:handle': rtt_tests_typo has no 'handle'" in result.stderr
