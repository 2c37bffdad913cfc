"""A handler that keeps failing is retried with growing delays, then dead-lettered;
`rtt dlq replay` re-drives it to that consumer alone, and it succeeds."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from shared.keys import Keys
from tests.bodies import sample_bodies
from tests.helpers import add_events_sync, wait_for
from tests.processes import start_worker
from tests.worker.helpers import RECORDER, REPO, worker_env
from tests.worker.plugins import handled_key, log_key, parse, started_key
from worker.retry import backoff_s

pytestmark = pytest.mark.slow


class _Floor:
    def random(self) -> float:
        return 0.0


def test_failing_handler_is_retried_then_dead_lettered_then_replayed(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: Redis
) -> None:
    keys = Keys(prefix)
    env = worker_env(redis_url, prefix, max_deliveries="4", retry_base="100ms")
    env["REC_FAIL_KEY"] = f"{prefix}:test:fail"
    sync_redis.set(env["REC_FAIL_KEY"], "1")
    worker = start_worker(
        env, tmp_path / "w-retry.log", "--consumer", RECORDER, worker_id="w-retry"
    )
    try:
        [entry_id] = add_events_sync(sync_redis, prefix, *sample_bodies(1, cause="error"))
        wait_for(lambda: sync_redis.xlen(keys.dlq) == 1, 30, "dead-lettered")
        attempts = [parse(raw) for raw in sync_redis.lrange(started_key(prefix), 0, -1)]
        assert sync_redis.hlen(handled_key(prefix)) == 0
        sync_redis.delete(env["REC_FAIL_KEY"])
        replayed_at = time.monotonic()
        command = ["dlq", "replay", "--all", "--redis-url", redis_url, "--key-prefix", prefix]
        replay = subprocess.run(
            [sys.executable, "-m", "rtt", *command, "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert replay.returncode == 0, replay.stderr
        assert "replayed 1 dead letter(s)" in replay.stderr
        wait_for(lambda: sync_redis.hlen(handled_key(prefix)) == 1, 30, "replay handled")
        succeeded_s = time.monotonic() - replayed_at
        wait_for(lambda: _acked(sync_redis, keys), 10, "both groups acknowledged")
    finally:
        assert worker.stop() == 0, worker.text()
    assert [(e, d) for e, d, _, _ in attempts] == [(entry_id, n) for n in (1, 2, 3, 4)]
    gaps_s = [(b[3] - a[3]) / 1000 for a, b in itertools.pairwise(attempts)]
    floors_s = [backoff_s(n, 0.1, 300, _Floor()) for n in (1, 2, 3)]  # type: ignore[arg-type]
    # Times are whole milliseconds, taken after the claim: allow one for rounding.
    assert all(gap >= floor - 0.001 for gap, floor in zip(gaps_s, floors_s, strict=True)), gaps_s
    [(new_id, delivery, _, _)] = [parse(raw) for raw in sync_redis.lrange(log_key(prefix), 0, -1)]
    assert new_id != entry_id
    assert delivery == 1
    assert sync_redis.xrange(keys.events(), new_id, new_id)[0][1][b"group"] == b"recorder"
    assert sync_redis.xlen(keys.dlq) == 0
    # The built-in alerts consumer saw the event once, and did not get the replay.
    assert len(worker.named("transcription_alert")) == 1
    print(
        f"\nretry: {len(attempts)} deliveries, gaps {', '.join(f'{g:.3f}s' for g in gaps_s)} "
        f"(floors {', '.join(f'{f:.2f}s' for f in floors_s)}), then dead-lettered; "
        f"replayed and handled {succeeded_s:.2f}s after `rtt dlq replay`"
    )


def _acked(sync_redis: Redis, keys: Keys) -> bool:
    groups = {g["name"]: g for g in sync_redis.xinfo_groups(keys.events())}
    return all(
        groups[name]["pending"] == 0 and groups[name]["lag"] == 0
        for name in (b"recorder", b"alerts")
    )
