"""SIGTERM: the worker stops reading, finishes what is in flight, acknowledges it, leaves
the rest pending, exits 0; another worker takes the rest at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from redis import Redis

from shared.keys import Keys
from tests.bodies import sample_bodies
from tests.helpers import add_events_sync, wait_for
from tests.processes import start_worker
from tests.worker.helpers import RECORDER, worker_env
from tests.worker.plugins import handled_key, log_key, parse, started_key

pytestmark = pytest.mark.slow


def test_sigterm_finishes_in_flight_work_and_hands_back_the_rest(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: Redis
) -> None:
    stream = Keys(prefix).events()
    env = worker_env(redis_url, prefix, concurrency="2", batch_size="10", shutdown_timeout="20s")
    env["REC_SLEEP_MS"] = "1000"
    first = start_worker(
        env, tmp_path / "w-leaving.log", "--consumer", RECORDER, worker_id="w-leaving"
    )
    ids = add_events_sync(sync_redis, prefix, *sample_bodies(6))
    wait_for(lambda: sync_redis.llen(started_key(prefix)) >= 2, 30, "two handlers running")
    first.send(signal.SIGTERM)
    assert first.wait(30) == 0
    first.stop()
    in_flight = {parse(raw)[0] for raw in sync_redis.lrange(started_key(prefix), 0, -1)}
    assert len(in_flight) == 2
    assert {k.decode() for k in sync_redis.hkeys(handled_key(prefix))} == in_flight
    pending = {
        r["message_id"].decode()
        for r in sync_redis.xpending_range(stream, "recorder", "-", "+", 100)
    }
    assert pending == set(ids) - in_flight
    [stopped] = [line for line in first.named("consumer_stopped") if line["consumer"] == "recorder"]
    assert stopped["cancelled"] == 0

    env["REC_SLEEP_MS"] = "0"
    second = start_worker(env, tmp_path / "w-next.log", "--consumer", RECORDER, worker_id="w-next")
    started = time.monotonic()
    try:
        wait_for(lambda: sync_redis.hlen(handled_key(prefix)) == 6, 30, "the rest handled")
        taken_s = time.monotonic() - started
    finally:
        assert second.stop() == 0, second.text()
    handled = {k.decode(): int(v) for k, v in sync_redis.hgetall(handled_key(prefix)).items()}
    assert handled == dict.fromkeys(ids, 1)
    by_second = {
        e: d
        for e, d, w, _ in map(parse, sync_redis.lrange(log_key(prefix), 0, -1))
        if w == "w-next"
    }
    assert set(by_second) == pending
    assert set(by_second.values()) == {2}
    print(
        f"\nshutdown: 2 in flight finished and acknowledged, {len(pending)} handed back, "
        f"handled by the next worker {taken_s:.2f}s after it started"
    )
