"""What each sink receives for an alert, field by field, and how delivery copes with errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually

APP = "7fc9698a-b04a-468b-9e8f-91238c0d0086"
ROUTING_KEY = "R0UTINGKEY0123456789012345678901"


def _failed_stop(call_id: str = "c-1", transcription_id: str = "t-1", **over: Any) -> bytes:
    event = sample_event("stopped", cause="connection-error", call_id=call_id)
    event["eventTime"] = "2026-01-02T03:04:05.678Z"
    event["realTimeTranscription"] = {
        "id": transcription_id,
        "name": "live_audience",
        "startTime": "2026-01-02T03:02:13.461Z",
        "tracks": ["inbound", "outbound"],
        "destination": "wss://asr.example.com/live?session=42",
        "stabilized": "true",
        "duration": "PT1M52.217257456S",
    }
    event.update(over)
    return msgspec.json.encode(event)


def _key(transcription_id: str, event_type: str, cause: str) -> str:
    return hashlib.sha256(f"{transcription_id}|{event_type}|{cause}".encode()).hexdigest()[:32]


ALERT_KEY = _key("t-1", "realTimeTranscriptionStopped", "connection-error")
ALERT_FIELDS = {
    "alert_key": ALERT_KEY,
    "severity": "error",
    "event_type": "realTimeTranscriptionStopped",
    "cause": "connection-error",
    "error_message": "Websocket connection to destination timed out",
    "call_id": "c-1",
    "transcription_id": "t-1",
    "transcription_name": "live_audience",
    "destination": "wss://asr.example.com/live?session=42",
    "account_id": "55555555",
    "application_id": APP,
    "tracks": ["inbound", "outbound"],
    "duration_s": 112.217257,
    "event_time": "2026-01-02T03:04:05.678000+00:00",
}


async def _one_alert(
    settings: Settings, redis: Redis, body: bytes | None = None, count: int = 1
) -> None:
    async with running_workers(settings, redis):
        await add_events(redis, settings, body or _failed_stop())
        await wait_handled(redis, settings, count)


async def test_webhook_receives_the_alert_as_json(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = make_settings(**sink_settings(sink_servers))
    await _one_alert(settings, redis)
    [request] = sink_servers["webhook"].received
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == ALERT_KEY
    assert request.json() == {"kind": "alert", **ALERT_FIELDS}


async def test_slack_receives_an_incoming_webhook_message(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = make_settings(**sink_settings(sink_servers))
    await _one_alert(settings, redis)
    [request] = sink_servers["slack"].received
    message = request.json()
    assert message["text"] == (
        "Transcription stopped: connection-error: Websocket connection to destination timed out"
    )
    header, reason, fields, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":red_circle: Transcription stopped: connection-error",
            "emoji": True,
        },
    }
    assert reason == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Websocket connection to destination timed out"},
    }
    assert fields["type"] == "section"
    assert [f["text"] for f in fields["fields"]] == [
        "*Call*\n`c-1`",
        "*Transcription*\n`live_audience` (`t-1`)",
        "*Destination*\n`wss://asr.example.com/live?session=42`",
        f"*Application*\n`{APP}`",
        "*Account*\n`55555555`",
        "*Tracks*\ninbound, outbound",
        "*Duration*\n112.2 s",
        "*Event time*\n2026-01-02T03:04:05.678000+00:00",
    ]
    assert all(f["type"] == "mrkdwn" for f in fields["fields"])
    assert context == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f"alert key `{ALERT_KEY}`"}],
    }


async def test_pagerduty_receives_a_trigger_with_the_alert_key_as_dedup_key(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = make_settings(**sink_settings(sink_servers))
    await _one_alert(settings, redis)
    [request] = sink_servers["pagerduty"].received
    assert request.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": ALERT_KEY,
        "client": "rtt-events",
        "payload": {
            "summary": "Transcription stopped: connection-error: "
            "Websocket connection to destination timed out",
            "component": "real-time-transcription",
            "source": "asr.example.com",
            "severity": "error",
            "timestamp": "2026-01-02T03:04:05.678000+00:00",
            "group": APP,
            "class": "connection-error",
            "custom_details": ALERT_FIELDS,
        },
    }


async def test_rejected_duplicate_is_a_warning_everywhere(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = make_settings(**sink_settings(sink_servers))
    body = sample_event("rejected", cause="duplicate", call_id="c-9", transcription_id="t-9")
    await _one_alert(settings, redis, msgspec.json.encode(body))
    [line] = logs.named("transcription_alert")
    assert (line["level"], line["severity"], line["cause"]) == ("warning", "warning", "duplicate")
    [hook] = sink_servers["webhook"].accepted
    assert (hook["severity"], hook["event_type"]) == ("warning", "realTimeTranscriptionRejected")
    [slack] = sink_servers["slack"].accepted
    assert slack["blocks"][0]["text"]["text"] == ":warning: Transcription rejected: duplicate"
    [page] = sink_servers["pagerduty"].accepted
    assert page["payload"]["severity"] == "warning"


async def test_a_sink_answering_500_then_200_gets_exactly_one_delivery(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    webhook = sink_servers["webhook"]
    webhook.answer(500)
    settings = make_settings(alert_webhook_url=webhook.url, alert_sink_retries=2)
    await _one_alert(settings, redis)
    assert [r.status for r in webhook.received] == [500, 200]
    assert [a["alert_key"] for a in webhook.accepted] == [ALERT_KEY]
    assert len(logs.named("transcription_alert")) == 1


async def test_429_is_honoured_for_as_long_as_retry_after_says(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    slack = sink_servers["slack"]
    slack.answer((429, {"Retry-After": "1"}))
    settings = make_settings(alert_slack_webhook_url=slack.url, alert_sink_retries=1)
    await _one_alert(settings, redis)
    throttled, delivered = slack.received
    assert (throttled.status, delivered.status) == (429, 200)
    # Honouring Retry-After means not asking again before it has passed.
    assert delivered.at - throttled.at >= 1.0
    assert len(slack.accepted) == 1


async def test_redelivered_entries_alert_no_second_time(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = make_settings(**sink_settings(sink_servers))
    await _one_alert(settings, redis)
    # Rewind the group: the runtime reads (and handles) the same entry again.
    stream = Keys(settings.key_prefix).events()
    await redis.xgroup_setid(stream, "alerts", "0", entries_read=0)
    async with running_workers(settings, redis):
        await wait_handled(redis, settings, 1)
    assert len(logs.named("transcription_alert")) == 1
    for name, server in sink_servers.items():
        assert len(server.received) == 1, name


async def test_closed_never_alerts(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = make_settings(**sink_settings(sink_servers))
    closed = msgspec.json.encode(sample_event("stopped", cause="closed"))
    await _one_alert(settings, redis, closed)
    assert logs.named("transcription_alert") == []
    assert all(server.received == [] for server in sink_servers.values())


async def test_a_stop_without_its_start_alerts_once_whatever_comes_after(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = make_settings(alert_webhook_url=sink_servers["webhook"].url)
    started = sample_event("started", call_id="c-1", transcription_id="t-1")
    async with running_workers(settings, redis):
        await add_events(redis, settings, _failed_stop())
        await eventually(lambda: sink_servers["webhook"].accepted, what="alert before start")
        # The Started that should have come first, then Bandwidth's retry of the Stopped.
        await add_events(redis, settings, msgspec.json.encode(started))
        await add_events(redis, settings, _failed_stop())
        await wait_handled(redis, settings, 3)
    assert [a["alert_key"] for a in sink_servers["webhook"].accepted] == [ALERT_KEY]
    assert len(logs.named("transcription_alert")) == 1
