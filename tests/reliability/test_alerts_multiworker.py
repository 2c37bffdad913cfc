"""Three worker processes, 1,000 failures to one destination: one alert, summaries that add up."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import load_settings
from tests.alerts.helpers import settled, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_body
from tests.helpers import add_events, eventually
from tests.processes import worker_processes
from tests.worker.helpers import worker_env

pytestmark = pytest.mark.slow
FAILURES = 1000


async def test_three_workers_one_first_alert_and_summaries_adding_up_to_every_failure(
    redis_url: str, prefix: str, redis: Redis, tmp_path: Path
) -> None:
    webhook = SinkServer()
    await webhook.start()
    env = worker_env(
        redis_url,
        prefix,
        batch_size="50",
        heartbeat_ttl="10s",
        alert_webhook_url=webhook.url,
        alert_group_interval="300ms",
        alert_repeat_interval="1h",
        alert_rate_min_stops="1000000",
    )
    settings = load_settings(env=env)
    stream = Keys(prefix).events()
    try:
        async with worker_processes(env, tmp_path, 3) as workers:
            # Every worker reading before the failures come: one that is still starting
            # would find them all handled by the others.
            await eventually(lambda: _readers(redis, stream), 60, "three workers reading")
            failures = [
                sample_body(
                    "stopped",
                    cause="connection-error",
                    call_id=f"c-{n}",
                    transcription_id=f"t-{n}",
                    destination=f"wss://asr.example.com/s/{n}",
                )
                for n in range(FAILURES)
            ]
            await add_events(redis, settings, *failures)
            await wait_handled(redis, settings, FAILURES, timeout_s=60)
            await eventually(lambda: settled(redis, settings), 30, "windows closed, delivered")
            alert_lines = [w.named("transcription_alert") for w in workers]
    finally:
        await webhook.stop()
    alerts = [b for b in webhook.accepted if b["kind"] == "alert"]
    summaries = [b for b in webhook.accepted if b["kind"] == "summary"]
    counts = [s["count"] for s in summaries]
    per_worker = [len(lines) for lines in alert_lines]
    print(
        f"\nfirst alerts: {len(alerts)}; summaries: {len(summaries)} with counts {counts} "
        f"(1 + {sum(counts)} = {1 + sum(counts)}); transcription_alert lines per worker: "
        f"{per_worker}"
    )
    assert len(alerts) == 1
    assert summaries
    # Every failure is counted in exactly one notification: the first alert stands for
    # itself, each summary's count for those after it.
    assert 1 + sum(counts) == FAILURES
    assert {s["dedup_key"] for s in summaries} == {alerts[0]["alert_key"]}
    assert all(s["group"]["destination_host"] == "asr.example.com" for s in summaries)
    # Nothing was sent twice, and nothing but these reached the sink.
    assert len({s["summary_key"] for s in summaries}) == len(summaries)
    assert all(r.status == 200 for r in webhook.received)
    assert len(webhook.received) == 1 + len(summaries)
    # The log has each failure once, whichever worker handled it; all three took part.
    keys = Counter(line["alert_key"] for lines in alert_lines for line in lines)
    assert len(keys) == FAILURES
    assert set(keys.values()) == {1}
    assert all(n > 0 for n in per_worker)


async def _readers(redis: Redis, stream: str) -> bool:
    """Each of the three workers has read from the stream in the alerts group."""
    if not await redis.exists(stream):
        return False
    groups: Any = await redis.xinfo_groups(stream)
    if not any(g["name"] == b"alerts" for g in groups):
        return False
    members: Any = await redis.xinfo_consumers(stream, "alerts")
    return {m["name"] for m in members} >= {b"w0", b"w1", b"w2"}
