"""The one duplicate alerts admit: a worker dying between the sink's answer and the record.

The sink takes the alert and answers a second later; the worker sending it is killed in
that second. The survivor takes the entry over once the dead worker's heartbeat lapses,
and sends the alert again: that copy is the documented duplicate window. It must come
within seconds (the send lock lapses with the heartbeat, it used to hold for the longest
send allowed, 45 s) and carry the same `Idempotency-Key`, so a folding receiver keeps one.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import load_settings
from tests.alerts.helpers import wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import add_events, eventually
from tests.processes import worker_processes
from tests.worker.helpers import worker_env

pytestmark = pytest.mark.slow
# Comfortably above the survivor's takeover (heartbeat TTL 1 s, checked every 0.2 s) and
# far below the 45 s the copy used to wait for the old lock.
COPY_WITHIN_S = 15.0


async def _holder(redis: Redis, stream: str) -> str | None:
    rows: Any = await redis.xpending_range(stream, "alerts", "-", "+", 10)
    return rows[0]["consumer"].decode() if rows else None


async def test_a_worker_killed_before_the_sink_answers_costs_one_copy_with_the_same_key(
    redis_url: str, prefix: str, redis: Redis, tmp_path: Path
) -> None:
    webhook = SinkServer(delay_s=1.0)
    await webhook.start()
    env = worker_env(
        redis_url,
        prefix,
        alert_webhook_url=webhook.url,
        alert_group_by="transcription_id",
        alert_rate_min_stops="1000000",
    )
    settings = load_settings(env=env)
    stream = Keys(prefix).events()
    body = sample_event("stopped", cause="error", call_id="c-1", transcription_id="t-1")
    try:
        async with worker_processes(env, tmp_path, 2) as workers:
            for worker in workers:
                await eventually(lambda w=worker: w.named("alert_sinks"), what="workers up")
            await add_events(redis, settings, msgspec.json.encode(body))
            await eventually(lambda: webhook.received, what="the alert at the sink")
            holder = await eventually(lambda: _holder(redis, stream), what="its holder")
            victim = workers[int(holder.removeprefix("w"))]
            victim.send(signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.to_thread(victim.wait, 10)
            await eventually(lambda: len(webhook.received) >= 2, timeout_s=60, what="the copy")
            await wait_handled(redis, settings, 1)
    finally:
        await webhook.stop()
    first, copy = webhook.received
    after_kill_s = copy.at - killed_at
    print(
        f"\ncrash window: the alert reached the sink, its worker was killed before the answer; "
        f"the copy came {after_kill_s:.2f}s after the kill, {copy.at - first.at:.2f}s after "
        f"the first, same Idempotency-Key: "
        f"{first.headers['Idempotency-Key'] == copy.headers['Idempotency-Key']}"
    )
    assert first.body == copy.body
    assert first.headers["Idempotency-Key"] == copy.headers["Idempotency-Key"]
    assert len(webhook.accepted_per_key()) == 1
    assert after_kill_s < COPY_WITHIN_S
