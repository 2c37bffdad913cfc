"""No event for RTT_ALERT_QUIET_AFTER: one alert, whatever the workers; events again resolve it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually
from worker.alerts.alertmanager import alertmanager_alerts
from worker.alerts.notifications import QuietChange


def _quiet(server: SinkServer, status: str) -> list[dict[str, Any]]:
    """The first incident's notifications (the feed may go quiet again before the end)."""
    return [
        b
        for b in server.accepted
        if b.get("kind") == "quiet" and b["status"] == status and b["incident"] == 1
    ]


async def test_a_quiet_feed_raises_one_alert_across_workers_and_events_resolve_it(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = make_settings(alert_quiet_after="1s", **sink_settings(sink_servers))
    webhook, pagerduty = sink_servers["webhook"], sink_servers["pagerduty"]
    body = msgspec.json.encode(sample_event("started", call_id="c-1", transcription_id="t-1"))
    async with running_workers(settings, redis, count=3):
        await add_events(redis, settings, body)
        await wait_handled(redis, settings, 1)
        [firing] = await eventually(lambda: _quiet(webhook, "firing"), what="the quiet alert")
        await add_events(redis, settings, body.replace(b"c-1", b"c-2"))
        [resolved] = await eventually(lambda: _quiet(webhook, "resolved"), what="the resolve")
        await eventually(lambda: len(pagerduty.accepted) >= 2, what="the PagerDuty resolve")
        await eventually(lambda: len(sink_servers["slack"].accepted) >= 2, what="Slack's")
    assert firing["dedup_key"] == resolved["dedup_key"] == f"{settings.key_prefix}-feed-quiet-1"
    assert firing["quiet_s"] >= 1.0
    assert firing["quiet_after_s"] == 1.0
    assert {b["kind"] for b in webhook.accepted} == {"quiet"}
    # Once each, though three workers watch: a notification per incident and status.
    assert set(webhook.accepted_per_key().values()) == {1}
    trigger, resolve = pagerduty.accepted[:2]
    assert trigger["event_action"] == "trigger"
    assert trigger["payload"]["class"] == "events-feed-quiet"
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"] == firing["dedup_key"]
    lines = [line for line in logs.named("events_feed_quiet") if line["incident"] == 1]
    assert [line["status"] for line in lines] == ["firing", "resolved"]


async def test_off_by_default(make_settings: Callable[..., Settings], redis: Redis) -> None:
    settings = make_settings()
    assert settings.alert_quiet_after.total_seconds() == 0
    async with running_workers(settings, redis):
        await add_events(redis, settings, msgspec.json.encode(sample_event("started")))
        await wait_handled(redis, settings, 1)
    assert not await redis.exists(Keys(settings.key_prefix).quiet_state)


def test_alertmanager_gets_the_quiet_incident_with_an_end_once_resolved() -> None:
    change = QuietChange(
        status="firing",
        dedup_key="rtt-feed-quiet-3",
        incident=3,
        last_event_at="2026-01-02T03:00:00.000+00:00",
        quiet_s=900.0,
        quiet_after_s=900.0,
        at="2026-01-02T03:15:00.000+00:00",
    )
    [firing] = alertmanager_alerts(change, timedelta(hours=1))
    [ended] = alertmanager_alerts(
        msgspec.structs.replace(change, status="resolved"), timedelta(hours=1)
    )
    assert firing["labels"] == {
        "alertname": "EventsFeedQuiet",
        "severity": "error",
        "incident": "3",
    }
    assert "endsAt" not in firing
    assert ended["labels"] == firing["labels"]
    assert ended["endsAt"] == "2026-01-02T03:15:00.000Z"
