"""A sink's `429` delays alerts and never dead-letters them.

The webhook answers one `429` with a `Retry-After` longer than a handler waits (10 s);
every alert raised meanwhile must still be delivered, once, after the pause: none on the
dead-letter stream, whatever the worker's retries. Accounting is by alert key.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, settled, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import add_events, eventually

pytestmark = pytest.mark.slow


def _failure(n: int) -> bytes:
    body = sample_event("stopped", cause="error", call_id=f"c-{n}", transcription_id=f"t-{n}")
    return msgspec.json.encode(body)


async def throttled_run(
    make_settings: Callable[..., Settings],
    redis: Redis,
    *,
    alerts: int,
    retry_after_s: int,
    **overrides: str,
) -> None:
    """`alerts` alerts, the webhook's first answer a `429` for `retry_after_s`."""
    webhook = SinkServer()
    webhook.answer((429, {"Retry-After": str(retry_after_s)}))
    await webhook.start()
    settings = make_settings(
        alert_webhook_url=webhook.url,
        alert_group_by="transcription_id",
        alert_rate_min_stops="1000000",
        alert_group_interval="500ms",
        **overrides,
    )
    try:
        async with running_workers(settings, redis, count=2):
            for n in range(alerts):
                await add_events(redis, settings, _failure(n))
            await wait_handled(redis, settings, alerts, timeout_s=60)
            await eventually(
                lambda: settled(redis, settings), timeout_s=retry_after_s + 60, what="delivered"
            )
            dead = await redis.xrange(Keys(settings.key_prefix).dlq)
    finally:
        await webhook.stop()
    throttled = [r for r in webhook.received if r.status == 429]
    posted = webhook.accepted_per_key()
    calls = {body["alert_key"]: body["call_id"] for body in webhook.accepted}
    expected = {f"c-{n}" for n in range(alerts)}
    missing = sorted(expected - set(calls.values()))
    twice = sorted(calls[key] for key, count in posted.items() if count > 1)
    later = [r for r in webhook.received if r.status == 200 and r.at > throttled[0].at + 1]
    waited = min(r.at for r in later) - throttled[0].at if later else 0.0
    print(
        f"\n429 with Retry-After {retry_after_s}s, {alerts} alerts: posted {sum(posted.values())}, "
        f"missing {missing}, twice {twice}, dead-lettered {len(dead)}; {len(later)} delivered "
        f"after the pause, the first {waited:.1f}s after the 429"
    )
    assert dead == []
    assert missing == []
    assert twice == []
    assert len(throttled) == 1
    # The pause was honoured: what waited for it came after Retry-After, not before.
    assert later
    assert waited >= retry_after_s - 0.5


async def test_a_429_longer_than_a_handler_waits_delays_alerts_and_dead_letters_none(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    # Two deliveries an entry: on a worker that spends its retries inside the pause,
    # every alert raised in it would be dead-lettered within a second.
    await throttled_run(
        make_settings, redis, alerts=30, retry_after_s=12, max_deliveries="2", retry_base="50ms"
    )
