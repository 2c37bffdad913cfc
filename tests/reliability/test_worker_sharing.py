"""Two worker processes in one consumer group share the work, and no entry is handled by
both in one delivery."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from redis import Redis

from shared.keys import Keys
from tests.bodies import sample_bodies
from tests.helpers import add_events_sync, wait_for
from tests.processes import start_worker
from tests.worker.helpers import RECORDER, worker_env
from tests.worker.plugins import handled_key, log_key, parse

pytestmark = pytest.mark.slow
EVENTS = 300


def test_two_workers_share_one_group_without_handling_an_entry_twice(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: Redis
) -> None:
    env = worker_env(redis_url, prefix, concurrency="4", batch_size="20")
    env["REC_SLEEP_MS"] = "2"
    workers = [
        start_worker(env, tmp_path / f"{name}.log", "--consumer", RECORDER, worker_id=name)
        for name in ("w-a", "w-b")
    ]
    try:
        for worker in workers:
            wait_for(lambda w=worker: w.named("worker_started"), 30, "worker up")
        ids = add_events_sync(sync_redis, prefix, *sample_bodies(EVENTS))
        wait_for(lambda: sync_redis.hlen(handled_key(prefix)) == EVENTS, 30, "all handled")
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0], [w.text() for w in workers]
    handled = {k.decode(): int(v) for k, v in sync_redis.hgetall(handled_key(prefix)).items()}
    assert set(handled) == set(ids)
    assert set(handled.values()) == {1}
    records = [parse(raw) for raw in sync_redis.lrange(log_key(prefix), 0, -1)]
    deliveries = Counter((entry_id, delivery) for entry_id, delivery, _, _ in records)
    assert max(deliveries.values()) == 1
    by_worker = Counter(worker_id for _, _, worker_id, _ in records)
    assert set(by_worker) == {"w-a", "w-b"}
    assert sum(by_worker.values()) == EVENTS
    group = next(
        g for g in sync_redis.xinfo_groups(Keys(prefix).events()) if g["name"] == b"recorder"
    )
    assert group["pending"] == 0
    print(f"\nsharing: {EVENTS} events split {dict(by_worker)}; each handled once")
