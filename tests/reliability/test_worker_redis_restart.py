"""A Redis that restarts empty takes the consumer groups with it: the worker re-creates
its group, says so loudly, and goes on, without a hot loop and without stopping."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from redis import Redis

from shared.embedded import EmbeddedValkey
from tests.bodies import sample_bodies
from tests.helpers import add_events_sync, wait_for
from tests.processes import start_worker
from tests.worker.helpers import RECORDER, worker_env
from tests.worker.plugins import handled_key

pytestmark = pytest.mark.slow


def test_worker_survives_a_redis_that_restarts_empty(prefix: str, tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "valkey", appendonly=False).start()
    worker = None
    try:
        client = Redis.from_url(server.url)
        worker = start_worker(
            worker_env(server.url, prefix),
            tmp_path / "w-restart.log",
            "--consumer",
            RECORDER,
            worker_id="w-restart",
        )
        wait_for(lambda: worker.named("consumer_group_created"), 30, "worker up")
        add_events_sync(client, prefix, *sample_bodies(5))
        wait_for(lambda: client.hlen(handled_key(prefix)) == 5, 30, "first events handled")
        client.close()

        server.kill()
        down_at = time.monotonic()
        time.sleep(1.0)  # an outage the worker has to ride out
        server = EmbeddedValkey(tmp_path / "valkey", port=server.port, appendonly=False).start()
        outage_s = time.monotonic() - down_at
        client = Redis.from_url(server.url)
        assert client.hlen(handled_key(prefix)) == 0  # it came back empty
        wait_for(lambda: worker.named("consumer_group_recreated"), 30, "group re-created")
        ids = add_events_sync(client, prefix, *sample_bodies(5))
        wait_for(lambda: client.hlen(handled_key(prefix)) == 5, 30, "events after restart")
        handled = {k.decode() for k in client.hkeys(handled_key(prefix))}
        client.close()
        assert worker.process.poll() is None, "the worker keeps running"
    finally:
        code = worker.stop(signal.SIGTERM) if worker else None
        server.stop()
    assert code == 0, worker.text() if worker else ""
    assert handled == set(ids)
    recreated = worker.named("consumer_group_recreated")
    assert {line["level"] for line in recreated} == {"error"}
    assert "recorder" in {line["consumer"] for line in recreated}
    complaints = worker.named("redis_unavailable") + worker.named("heartbeat_failed")
    # Backoff: each loop retries a few times a second at first, then once in 5 s at most.
    assert 0 < len(complaints) < 20 * outage_s * 5, len(complaints)
    print(
        f"\nredis restart: {outage_s:.1f}s outage, {len(complaints)} complaint lines, "
        f"{len(recreated)} group(s) re-created, events after it handled"
    )
