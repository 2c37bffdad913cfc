"""A sink that stays down: retries, the dead-letter stream, `rtt dlq replay`, one delivery.

And a summary whose sink is down, and whose delivering worker dies, still arrives once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings, load_settings
from tests.alerts.helpers import running_workers, settled, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually
from tests.processes import worker_processes
from tests.worker.helpers import worker_env

pytestmark = pytest.mark.slow


def _failure(n: int) -> bytes:
    body = sample_event("stopped", cause="error", call_id=f"c-{n}", transcription_id=f"t-{n}")
    return msgspec.json.encode(body)


async def test_dead_letter_then_replay_delivers_once(
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    prefix: str,
    logs: LogLines,
) -> None:
    webhook, pagerduty = SinkServer(default_status=503), SinkServer(default_status=202)
    await webhook.start()
    await pagerduty.start()
    settings = make_settings(
        alert_webhook_url=webhook.url,
        alert_pagerduty_routing_key="R" * 32,
        alert_pagerduty_url=pagerduty.url,
        alert_sink_retries="1",
        alert_sink_timeout="1s",
        max_deliveries="3",
        retry_base="50ms",
        retry_max="200ms",
    )
    dlq = Keys(prefix).dlq
    try:
        async with running_workers(settings, redis):
            await add_events(redis, settings, _failure(1))
            await eventually(lambda: redis.xlen(dlq), what="dead letter")
            await wait_handled(redis, settings, 1)
            # 3 deliveries of the entry, each trying the webhook twice; nothing taken.
            assert [r.status for r in webhook.received] == [503] * 6
            [letter] = await redis.xrange(dlq)
            assert letter[1][b"group"] == b"alerts"
            assert b"webhook" in letter[1][b"error"]
            # PagerDuty took it on the first delivery, and only then.
            assert len(pagerduty.accepted) == 1

            webhook.default_status = 200
            command = ["dlq", "replay", "--all", "--redis-url", redis_url, "--key-prefix", prefix]
            replay = await asyncio.create_subprocess_exec(sys.executable, "-m", "rtt", *command)
            assert await asyncio.wait_for(replay.wait(), 60) == 0
            await eventually(lambda: webhook.accepted, what="delivery after replay")
            await wait_handled(redis, settings, 2)
        assert await redis.xlen(dlq) == 0
        [alert] = webhook.accepted
        assert (alert["kind"], alert["call_id"]) == ("alert", "c-1")
        assert len(pagerduty.accepted) == 1
        assert len(logs.named("transcription_alert")) == 1
    finally:
        await webhook.stop()
        await pagerduty.stop()


async def test_a_summary_survives_a_sink_outage_and_its_deliverer_being_killed(
    redis_url: str, prefix: str, redis: Redis, tmp_path: Path
) -> None:
    webhook = SinkServer()
    await webhook.start()
    env = worker_env(
        redis_url,
        prefix,
        alert_webhook_url=webhook.url,
        alert_group_interval="200ms",
        alert_sink_retries="0",
        alert_sink_timeout="1s",
        retry_base="50ms",
        retry_max="300ms",
        alert_rate_min_stops="1000000",
    )
    settings = load_settings(env=env)
    keys = Keys(prefix)
    try:
        async with worker_processes(env, tmp_path, 2) as workers:
            await add_events(redis, settings, _failure(0))
            await eventually(lambda: webhook.accepted, what="first alert")
            webhook.default_status = 503
            for n in range(1, 6):
                await add_events(redis, settings, _failure(n))
            await wait_handled(redis, settings, 6)
            await eventually(lambda: redis.xlen(keys.alert_outbox), what="summary in outbox")
            await eventually(lambda: _refused(webhook), what="a refused summary")
            # The worker delivering the outbox dies; the other takes over once its lease ends.
            holder = (await redis.get(keys.alert_leader)).decode()
            killed = int(holder.split(":")[0].removeprefix("w"))
            workers[killed].send(signal.SIGKILL)
            await asyncio.to_thread(workers[killed].wait, 10)
            webhook.default_status = 200
            await eventually(lambda: settled(redis, settings), timeout_s=30, what="delivered")
            # Delivered by the survivor, which now holds the lease.
            assert await _lease_of(redis, keys, f"w{1 - killed}")
        # The five may span two windows on a busy machine: every one is counted, once.
        summaries = _summaries(webhook)
        assert sum(s["count"] for s in summaries) == 5
        assert [b["kind"] for b in webhook.accepted] == ["alert"] + ["summary"] * len(summaries)
        assert len(webhook.accepted_per_key()) == 1 + len(summaries)
    finally:
        await webhook.stop()


def _refused(server: SinkServer) -> bool:
    return any(r.status == 503 and b'"summary"' in r.body for r in server.received)


def _summaries(server: SinkServer) -> list[dict[str, Any]]:
    return [b for b in server.accepted if b["kind"] == "summary"]


async def _lease_of(redis: Redis, keys: Keys, survivor_id: str) -> bool:
    holder = await redis.get(keys.alert_leader)
    return holder is not None and holder.decode().startswith(survivor_id + ":")
