"""Redis goes away after a sink took an alert and before the record: nothing is sent twice.

The sink answers after 1.5 s; Valkey is killed while every alert is waiting for that
answer and comes back (from its append-only file) 3 s later. The delivery record cannot
be written when the sink answers; the worker must keep the fact that the sink has the
alert and write the record once Redis answers, not treat Redis's error as the sink's and
send again. Accounting is by alert key: each posted exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from shared.connections import create_redis
from shared.embedded import EmbeddedValkey
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually

pytestmark = pytest.mark.slow
ALERTS = 40
OUTAGE_S = 3.0


def _failure(n: int) -> bytes:
    body = sample_event("stopped", cause="error", call_id=f"c-{n}", transcription_id=f"t-{n}")
    return msgspec.json.encode(body)


def _valkey(data_dir: Path, port: int | None = None) -> EmbeddedValkey:
    # fsync on every write: the restart must not lose records, or the test would measure
    # Valkey's durability instead of the worker's.
    return EmbeddedValkey(data_dir, port=port, extra_args=["--appendfsync", "always"])


async def test_a_redis_outage_between_answer_and_record_sends_nothing_twice(
    make_settings: Callable[..., Settings], tmp_path: Path, logs: LogLines
) -> None:
    await blip_run(make_settings, tmp_path, logs, alerts=ALERTS)


async def blip_run(
    make_settings: Callable[..., Settings], tmp_path: Path, logs: LogLines, *, alerts: int
) -> None:
    """`alerts` first alerts at a sink answering after 1.5 s; Valkey down for 3 s meanwhile."""
    server = await asyncio.to_thread(_valkey(tmp_path / "valkey").start)
    webhook = SinkServer(delay_s=1.5)
    await webhook.start()
    settings = make_settings(
        redis_url=server.url,
        alert_webhook_url=webhook.url,
        alert_group_by="transcription_id",
        alert_rate_min_stops="1000000",
        retry_base="50ms",
        retry_max="1s",
    )
    # The worker's client as the product builds it (read and connect timeouts included).
    redis = create_redis(settings)
    try:
        async with running_workers(settings, redis):
            for n in range(alerts):
                await add_events(redis, settings, _failure(n))
            # As many alerts as a worker sends at once are at the sink, waiting for their
            # answers: now Redis goes.
            in_flight = min(alerts, settings.concurrency)
            await eventually(lambda: len(webhook.received) >= in_flight, what="at the sink")
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(OUTAGE_S)
            server = await asyncio.to_thread(_valkey(tmp_path / "valkey", server.port).start)
            # A client of its own: the worker's has connections the restart closed.
            async with Redis.from_url(server.url) as probe:
                await wait_handled(probe, settings, alerts, timeout_s=90)
                dlq = await probe.xlen(Keys(settings.key_prefix).dlq)
    finally:
        await redis.aclose()
        await webhook.stop()
        await asyncio.to_thread(server.stop)
    posted = webhook.accepted_per_key()
    alerted = {body["call_id"]: body["alert_key"] for body in webhook.accepted}
    twice = sorted(call for call, key in alerted.items() if posted[key] != 1)
    missing = sorted({f"c-{n}" for n in range(alerts)} - set(alerted))
    retries = logs.named("alert_record_retry")
    print(
        f"\nredis blip: {alerts} alerts, sink answering after {webhook.delay_s}s, Valkey down "
        f"{OUTAGE_S}s: posted {sum(posted.values())}, posted twice {len(twice)} {twice}, "
        f"missing {missing}, {in_flight} in flight at the outage, records written late "
        f"{len(logs.named('alert_recorded'))}, dead-lettered {dlq}"
    )
    assert missing == []
    assert twice == []
    assert dlq == 0
    assert retries, "the outage happened between the sink's answer and the record"
    # Those whose answer came during the outage: all of them, unless the first answers
    # came before the kill (the sends ramp up while the 64th is still on its way).
    assert 0 < len(logs.named("alert_recorded")) <= in_flight
