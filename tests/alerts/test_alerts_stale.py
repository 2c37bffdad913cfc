"""A Started whose Stopped never came raises one stale alert; a late Stopped resolves it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from shared.events import Started, decode_event
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually
from worker.alerts.alertmanager import alertmanager_alerts
from worker.alerts.notifications import StaleResolved
from worker.alerts.stale import stale_alert


def _event(kind: str, n: int, **over: Any) -> bytes:
    return msgspec.json.encode(
        sample_event(kind, call_id=f"c-{n}", transcription_id=f"t-{n}", **over)
    )


def _started(n: int) -> bytes:
    return _event("started", n)


def _stopped(n: int) -> bytes:
    # A stop that is not a failure: only the stale rule has anything to say about it.
    return _event("stopped", n, cause="stopped")


def _settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "alert_rate_min_stops": 1_000_000,
        "alert_stale_after": "1s",
        "alert_group_interval": "200ms",
    }
    return make_settings(**(values | overrides))


def _stale(server: SinkServer) -> list[dict[str, Any]]:
    return [b for b in server.accepted if b.get("kind") == "alert" and b["cause"] == "stale"]


def _resolved(server: SinkServer) -> list[dict[str, Any]]:
    return [b for b in server.accepted if b.get("kind") == "stale_resolved"]


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], sink_servers: dict[str, SinkServer]
) -> Settings:
    """Every sink on, with this file's stale and group timings."""
    return _settings(make_settings, **sink_settings(sink_servers))


async def _zero(count: Any) -> bool:
    return bool(await count == 0)


async def _stale_keys(redis: Redis, settings: Settings) -> dict[str, int]:
    """Every key the stale rule keeps, with its TTL in ms (-1: none)."""
    keys = Keys(settings.key_prefix)
    found = {}
    for part in ("open", "closed", "stale"):
        async for key in redis.scan_iter(match=f"{keys.alert_open('x')[:-6]}{part}*"):
            found[key.decode()] = await redis.pttl(key)
    return found


async def test_a_started_without_stop_raises_one_stale_alert_and_one_that_stopped_none(
    settings: Settings, redis: Redis, sink_servers: dict[str, SinkServer], logs: LogLines
) -> None:
    webhook = sink_servers["webhook"]
    async with running_workers(settings, redis):
        # Transcription 1 stops in time; only then does transcription 2 start, and it never
        # stops: when 2 is stale, 1 would have been long before.
        await add_events(redis, settings, _started(1), _stopped(1))
        await wait_handled(redis, settings, 2)
        await add_events(redis, settings, _started(2))
        await wait_handled(redis, settings, 3)
        await eventually(lambda: _stale(webhook), what="the stale alert")
        await eventually(lambda: sink_servers["pagerduty"].accepted, what="the page")
        await eventually(lambda: sink_servers["slack"].accepted, what="the Slack message")
    [alert] = _stale(webhook)
    assert alert["transcription_id"] == "t-2"
    assert alert["call_id"] == "c-2"
    assert alert["severity"] == "warning"
    assert alert["event_type"] == "realTimeTranscriptionStarted"
    assert "no Stopped or Rejected 1s after Started" in alert["error_message"]
    assert len(webhook.accepted) == 1
    [page] = sink_servers["pagerduty"].accepted
    assert page["event_action"] == "trigger"
    assert page["dedup_key"] == alert["alert_key"]
    [slack] = sink_servers["slack"].accepted
    assert slack["text"].startswith("Transcription open too long: stale")
    [line] = logs.named("transcription_alert")
    assert line["alert_key"] == alert["alert_key"]
    # Nothing is left without a TTL: the open record is gone, the marker and the stop's
    # tombstone expire by themselves.
    keys = Keys(settings.key_prefix)
    assert await redis.zcard(keys.alert_open_due) == 0
    left = await _stale_keys(redis, settings)
    assert set(left) == {keys.alert_closed("t-1"), keys.alert_stale("t-2")}
    assert all(ttl > 0 for ttl in left.values()), left


async def test_a_late_stop_resolves_the_stale_alert_in_every_sink(
    settings: Settings, redis: Redis, sink_servers: dict[str, SinkServer], logs: LogLines
) -> None:
    webhook, pagerduty = sink_servers["webhook"], sink_servers["pagerduty"]
    async with running_workers(settings, redis):
        await add_events(redis, settings, _started(1))
        [alert] = await eventually(lambda: _stale(webhook), what="the stale alert")
        # The stop twice, as Bandwidth retrying it: one resolve.
        await add_events(redis, settings, _stopped(1), _stopped(1))
        await wait_handled(redis, settings, 3)
        await eventually(lambda: _resolved(webhook), what="the resolve")
        await eventually(lambda: len(pagerduty.accepted) == 2, what="the PagerDuty resolve")
        await eventually(lambda: logs.named("transcription_alert_resolved"), what="log line")
    [resolved] = _resolved(webhook)
    assert resolved["dedup_key"] == alert["alert_key"]
    assert resolved["alert"] == alert
    assert pagerduty.accepted[1] == {
        "routing_key": pagerduty.accepted[0]["routing_key"],
        "event_action": "resolve",
        "dedup_key": alert["alert_key"],
    }
    assert len(webhook.accepted) == 2
    assert webhook.accepted_per_key()[f"{alert['alert_key']}-resolved"] == 1
    [line] = logs.named("transcription_alert_resolved")
    assert line["alert_key"] == alert["alert_key"]
    assert line["transcription_id"] == "t-1"
    keys = Keys(settings.key_prefix)
    assert await redis.get(keys.alert_stale("t-1")) == b"resolved"


async def test_two_workers_raise_each_stale_alert_once(
    settings: Settings, redis: Redis, sink_servers: dict[str, SinkServer]
) -> None:
    webhook = sink_servers["webhook"]
    async with running_workers(settings, redis, count=2):
        for n in range(10):
            await add_events(redis, settings, _started(n))
        await wait_handled(redis, settings, 10)
        await eventually(lambda: _stale(webhook), what="stale alerts")
        # Grouped by cause and host: the first alone, the rest in summaries.
        await eventually(
            lambda: 1 + sum(b["count"] for b in webhook.accepted if b["kind"] == "summary") == 10,
            what="every stale transcription counted",
        )
    assert len(_stale(webhook)) == 1
    assert set(webhook.accepted_per_key().values()) == {1}
    assert await redis.zcard(Keys(settings.key_prefix).alert_open_due) == 0


async def test_a_worker_stopped_before_a_sink_took_the_alert_loses_nothing(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    overrides = sink_settings(sink_servers)
    del overrides["alert_slack_webhook_url"], overrides["alert_pagerduty_routing_key"]
    settings = _settings(make_settings, alert_sink_retries=0, **overrides)
    webhook = sink_servers["webhook"]
    webhook.default_status = 503
    async with running_workers(settings, redis):
        await add_events(redis, settings, _started(1))
        await eventually(lambda: webhook.received, what="a refused attempt")
    assert webhook.accepted == []
    keys = Keys(settings.key_prefix)
    assert await redis.zscore(keys.alert_open_due, "t-1") is not None
    webhook.default_status = 200
    async with running_workers(settings, redis):
        await eventually(lambda: _stale(webhook), what="the stale alert, from the new worker")
        await eventually(
            lambda: _zero(redis.zcard(keys.alert_open_due)), what="the record marked raised"
        )
    assert len(_stale(webhook)) == 1


async def test_a_stop_before_its_start_opens_nothing(
    settings: Settings, redis: Redis, sink_servers: dict[str, SinkServer]
) -> None:
    webhook = sink_servers["webhook"]
    async with running_workers(settings, redis):
        # Out of order (a retried Started arriving after its Stopped): nothing is open.
        await add_events(redis, settings, _stopped(1), _started(1), _started(2))
        await wait_handled(redis, settings, 3)
        await eventually(lambda: _stale(webhook), what="transcription 2's stale alert")
    assert [a["transcription_id"] for a in _stale(webhook)] == ["t-2"]


async def test_off_keeps_nothing(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = _settings(make_settings, alert_stale_after="0s", **sink_settings(sink_servers))
    async with running_workers(settings, redis):
        await add_events(redis, settings, _started(1))
        await wait_handled(redis, settings, 1)
    assert await _stale_keys(redis, settings) == {}
    assert await redis.zcard(Keys(settings.key_prefix).alert_open_due) == 0


def test_alertmanager_resolve_has_the_stale_alerts_labels_and_ends_when_it_stopped() -> None:
    started = decode_event(_started(1))
    assert isinstance(started, Started)
    alert = stale_alert(started, timedelta(hours=4))
    at = "2026-01-02T03:04:05.678+00:00"
    [firing] = alertmanager_alerts(alert, timedelta(hours=1))
    [ended] = alertmanager_alerts(
        StaleResolved(dedup_key=alert.alert_key, alert=alert, at=at), timedelta(hours=1)
    )
    assert firing["labels"]["alertname"] == "TranscriptionStale"
    assert firing["labels"]["cause"] == "stale"
    assert ended["labels"] == firing["labels"]
    assert ended["endsAt"] == "2026-01-02T03:04:05.678Z"
