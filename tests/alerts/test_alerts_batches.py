"""A read batch of alerts, taken by the consumer at once: to the sinks no more at once than
its concurrency, each alert once."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from shared.settings import Settings
from tests.alerts.helpers import running_workers, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import add_events

ALERTS = 24
CONCURRENCY = 4


async def test_first_alerts_of_a_batch_reach_a_sink_no_more_at_once_than_its_concurrency(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    webhook = SinkServer(delay_s=0.2)
    await webhook.start()
    # Grouped per transcription, every alert is its group's first: each goes to the sink.
    settings = make_settings(
        concurrency=CONCURRENCY,
        alert_webhook_url=webhook.url,
        alert_group_by="transcription_id",
        alert_rate_min_stops="1000000",
    )
    try:
        for n in range(ALERTS):  # all in the stream before the worker starts: one batch
            body = sample_event(
                "stopped", cause="connection-error", call_id=f"c-{n}", transcription_id=f"t-{n}"
            )
            await add_events(redis, settings, msgspec.json.encode(body))
        async with running_workers(settings, redis):
            await wait_handled(redis, settings, ALERTS, timeout_s=60)
    finally:
        await webhook.stop()
    assert sorted(webhook.accepted_per_key().values()) == [1] * ALERTS
    # The sink holds each request `delay_s` before it answers: were more than CONCURRENCY
    # in flight at once, CONCURRENCY + 1 of them would have arrived within `delay_s`.
    arrivals = sorted(r.at for r in webhook.received)
    spans = [later - first for first, later in zip(arrivals, arrivals[CONCURRENCY:], strict=False)]
    assert min(spans) >= webhook.delay_s * 0.99, spans
