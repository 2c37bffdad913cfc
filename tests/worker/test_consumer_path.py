"""`--consumer my_consumers:name` finds `my_consumers.py` in the directory the worker is
started from, the same way for `rtt worker`, `python -m worker` and `rtt serve`."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from tests.bodies import sample_bodies
from tests.helpers import add_events_sync, wait_for
from tests.processes import start_worker
from tests.worker.helpers import worker_env

pytestmark = pytest.mark.slow

_CONSUMER = """
from worker import consumer


@consumer("local")
async def handle(event, ctx):
    await ctx.redis.sadd(ctx.key_prefix + ":seen", ctx.entry_id)
"""


@pytest.mark.parametrize("script", [True, False], ids=["rtt worker", "python -m worker"])
def test_consumer_module_in_the_current_directory_is_found(
    script: bool, redis_url: str, prefix: str, tmp_path: Path, sync_redis: Redis
) -> None:
    (tmp_path / "my_consumers.py").write_text(_CONSUMER)
    env = worker_env(redis_url, prefix)
    env.pop("PYTHONPATH", None)
    worker = start_worker(
        env,
        tmp_path / "worker.log",
        "--consumer",
        "my_consumers:handle",
        rtt=script,
        script=script,
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: worker.named("worker_started") or worker.process.poll() is not None, 30)
        assert worker.process.poll() is None, worker.text()
        ids = add_events_sync(sync_redis, prefix, *sample_bodies(3))
        wait_for(lambda: sync_redis.scard(f"{prefix}:seen") == len(ids), 30, "events handled")
    finally:
        assert worker.stop() == 0, worker.text()
