"""The Alertmanager sink: every alert (not summaries), labels a route can use, an endsAt."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from shared.settings import Settings
from tests.alerts.helpers import running_workers, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_body
from tests.helpers import add_events


@pytest.fixture
async def alertmanager_stand_in() -> AsyncIterator[SinkServer]:
    server = SinkServer()
    await server.start()
    yield server
    await server.stop()


async def test_every_alert_of_a_group_goes_to_alertmanager_with_routing_labels(
    make_settings: Callable[..., Settings], redis: Redis, alertmanager_stand_in: SinkServer
) -> None:
    base = alertmanager_stand_in.url.removesuffix("/hook")
    settings = make_settings(alert_alertmanager_url=base + "/", alert_group_interval="10s")
    async with running_workers(settings, redis):
        for n in range(3):
            body = sample_body(
                "stopped",
                cause="error",
                call_id=f"c-am-{n}",
                transcription_id=f"t-am-{n}",
                accountId="9900",
            )
            await add_events(redis, settings, body)
        await wait_handled(redis, settings, 3)
    # The three share a group: other sinks would get one alert and a summary; Alertmanager,
    # which groups by itself, gets each of them.
    received = alertmanager_stand_in.received
    assert {r.path for r in received} == {"/api/v2/alerts"}
    alerts = [alert for r in received for alert in r.json()]
    assert sorted(a["annotations"]["transcription_id"] for a in alerts) == [
        "t-am-0",
        "t-am-1",
        "t-am-2",
    ]
    for alert in alerts:
        labels = alert["labels"]
        assert labels["alertname"] == "TranscriptionFailed"
        assert labels["severity"] == "error"
        assert labels["cause"] == "error"
        assert labels["event_type"] == "realTimeTranscriptionStopped"
        assert labels["account_id"] == "9900"
        assert labels["destination_host"] == "transcripts.example.com"
        assert alert["endsAt"] > alert["startsAt"]
        assert alert["annotations"]["destination"] == "wss://transcripts.example.com/live"


async def test_an_alertmanager_that_fails_gets_the_alert_on_the_retry_and_only_once(
    make_settings: Callable[..., Settings], redis: Redis, alertmanager_stand_in: SinkServer
) -> None:
    alertmanager_stand_in.answer(503)
    base = alertmanager_stand_in.url.removesuffix("/hook")
    settings = make_settings(alert_alertmanager_url=base, retry_base="50ms", alert_sink_retries=0)
    async with running_workers(settings, redis):
        await add_events(redis, settings, sample_body("stopped", cause="connection-error"))
        await wait_handled(redis, settings, 1)
    assert [r.status for r in alertmanager_stand_in.received] == [503, 200]
