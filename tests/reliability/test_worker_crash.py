"""A worker killed with SIGKILL in the middle of its batches loses nothing: another worker
takes over its pending entries as soon as its heartbeat expires."""

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
from tests.worker.plugins import handled_key, log_key, parse

pytestmark = pytest.mark.slow
EVENTS = 400


def test_sigkill_mid_batch_loses_no_entry(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: Redis
) -> None:
    stream = Keys(prefix).events()
    env = worker_env(redis_url, prefix, concurrency="8", batch_size="50")
    env["REC_SLEEP_MS"] = "5"
    ids = add_events_sync(sync_redis, prefix, *sample_bodies(EVENTS))
    first = start_worker(env, tmp_path / "w-first.log", "--consumer", RECORDER, worker_id="w-first")
    try:
        wait_for(lambda: sync_redis.hlen(handled_key(prefix)) >= EVENTS // 4, 30, "a quarter done")
        first.send(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(10)
        held = {
            row["message_id"].decode()
            for row in sync_redis.xpending_range(stream, "recorder", "-", "+", 10_000, "w-first")
        }
        done_at_kill = sync_redis.hlen(handled_key(prefix))
    finally:
        first.stop()
    assert held, "the kill should catch the worker holding entries"
    second = start_worker(
        env, tmp_path / "w-second.log", "--consumer", RECORDER, worker_id="w-second"
    )
    try:
        wait_for(lambda: sync_redis.hlen(handled_key(prefix)) == EVENTS, 30, "every entry handled")
        recovered_s = time.monotonic() - killed_at
        wait_for(lambda: _drained(sync_redis, stream), 10, "nothing pending")
    finally:
        assert second.stop() == 0, second.text()
    handled = {k.decode(): int(v) for k, v in sync_redis.hgetall(handled_key(prefix)).items()}
    assert set(handled) == set(ids)
    twice = {entry_id for entry_id, times in handled.items() if times > 1}
    # At-least-once: only what the killed worker held can have been handled twice.
    assert twice <= held
    # The built-in alerts consumer takes over its own entries in a line of its own; and a
    # pass skips entries delivered less than a heartbeat ago, which the next pass takes.
    takeovers = [
        line
        for line in second.named("pending_taken_over")
        if (line["consumer"], line["from_worker"]) == ("recorder", "w-first")
    ]
    assert {line["reason"] for line in takeovers} == {"worker_dead"}
    taken_over = sum(line["entries"] for line in takeovers)
    assert taken_over == len(held)
    redelivered = [
        d
        for _, d, w, _ in map(parse, sync_redis.lrange(log_key(prefix), 0, -1))
        if w == "w-second" and d > 1
    ]
    assert len(redelivered) == taken_over
    print(
        f"\ncrash: {EVENTS} events, killed after {done_at_kill} handled holding {len(held)}; "
        f"all handled {recovered_s:.2f}s after the kill; handled twice: {len(twice)}; "
        f"lost: {EVENTS - len(handled)}"
    )


def _drained(sync_redis: Redis, stream: str) -> bool:
    [group] = [g for g in sync_redis.xinfo_groups(stream) if g["name"] == b"recorder"]
    return bool(group["pending"] == 0 and group["lag"] == 0)
