"""Bursts are grouped: the first alert at once, the rest in summaries whose counts add up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, settled, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually

APP = "7fc9698a-b04a-468b-9e8f-91238c0d0086"


def _failure(n: int, destination: str | None = "wss://asr.example.com/live", **over: Any) -> bytes:
    event = sample_event(
        "stopped",
        cause="connection-error",
        call_id=f"c-{n}",
        transcription_id=f"t-{n}",
        destination=destination,
    )
    event.update(over)
    return msgspec.json.encode(event)


def _settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    # The rate rule would fire on these all-failure bursts; its own tests cover it.
    return make_settings(alert_rate_min_stops=1_000_000, **overrides)


def _by_kind(server: SinkServer, kind: str) -> list[dict[str, Any]]:
    return [body for body in server.accepted if body["kind"] == kind]


async def test_two_workers_send_one_first_alert_and_summaries_that_add_up(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = _settings(
        make_settings,
        **sink_settings(sink_servers),
        alert_group_interval="300ms",
        alert_repeat_interval="1h",
    )
    webhook = sink_servers["webhook"]
    async with running_workers(settings, redis, count=2):
        for n in range(40):
            await add_events(redis, settings, _failure(n))
        await wait_handled(redis, settings, 40)
        await eventually(lambda: settled(redis, settings), what="windows closed and delivered")
    [first] = _by_kind(webhook, "alert")
    summaries = _by_kind(webhook, "summary")
    assert summaries
    assert 1 + sum(s["count"] for s in summaries) == 40
    # The log has every alert; the people-facing sinks, one alert plus summaries.
    assert len({line["alert_key"] for line in logs.named("transcription_alert")}) == 40
    assert len(logs.named("transcription_alert")) == 40
    seen_examples = set()
    for summary in summaries:
        assert summary["group"] == {
            "cause": "connection-error",
            "destination_host": "asr.example.com",
        }
        assert summary["dedup_key"] == first["alert_key"]
        assert summary["severity"] == "error"
        assert 1 <= len(summary["examples"]) <= min(5, summary["count"])
        for example in summary["examples"]:
            assert example["kind"] == "alert"
            assert example["destination"] == "wss://asr.example.com/live"
            seen_examples.add(example["alert_key"])
        assert summary["window_start"] < summary["window_end"]
    assert first["alert_key"] not in seen_examples
    # Slack and PagerDuty got the same news: one alert, the same summaries.
    slack = [m["text"] for m in sink_servers["slack"].accepted]
    label = "(cause=connection-error, destination_host=asr.example.com)"
    assert sorted(t for t in slack if " more transcription " in t) == sorted(
        f"{s['count']} more transcription {'failure' if s['count'] == 1 else 'failures'} {label}"
        for s in summaries
    )
    assert len(slack) == 1 + len(summaries)
    pages = sink_servers["pagerduty"].accepted
    assert len(pages) == 1 + len(summaries)
    # One PagerDuty incident per group: summaries update the first alert's incident.
    assert {p["dedup_key"] for p in pages} == {first["alert_key"]}
    assert [p["payload"]["custom_details"]["count"] for p in pages[1:]] == [
        s["count"] for s in summaries
    ]


async def test_summary_payload_field_by_field(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    # A window long enough for the three failures to share it on a busy machine.
    settings = _settings(make_settings, **sink_settings(sink_servers), alert_group_interval="3s")
    async with running_workers(settings, redis):
        for n in range(3):
            await add_events(redis, settings, _failure(n))
            await wait_handled(redis, settings, n + 1)
        await eventually(lambda: settled(redis, settings), what="summary delivered")
    [first, summary] = sink_servers["webhook"].accepted
    assert first["call_id"] == "c-0"
    assert set(summary) == {
        "kind",
        "summary_key",
        "dedup_key",
        "severity",
        "group",
        "count",
        "examples",
        "window_start",
        "window_end",
    }
    assert summary["kind"] == "summary"
    assert summary["count"] == 2
    assert [e["call_id"] for e in summary["examples"]] == ["c-1", "c-2"]
    assert summary["dedup_key"] == first["alert_key"]
    [_, slack] = sink_servers["slack"].accepted
    label = "cause=connection-error, destination_host=asr.example.com"
    assert slack["text"] == f"2 more transcription failures ({label})"
    header, body, context = slack["blocks"]
    assert header["text"]["text"] == f":red_circle: 2 more transcription failures ({label})"
    assert body["text"]["text"].splitlines()[1:] == [
        "• `c-1` `t-1`: Websocket connection to destination timed out",
        "• `c-2` `t-2`: Websocket connection to destination timed out",
    ]
    assert context["elements"][0]["text"] == f"group {label} · first alert `{first['alert_key']}`"
    [_, page] = sink_servers["pagerduty"].accepted
    assert page["event_action"] == "trigger"
    assert page["dedup_key"] == first["alert_key"]
    assert page["payload"]["summary"] == f"2 more transcription failures ({label})"
    assert page["payload"]["source"] == "asr.example.com"
    assert page["payload"]["custom_details"]["count"] == 2
    assert page["payload"]["custom_details"]["examples"] == [
        {
            "call_id": f"c-{n}",
            "transcription_id": f"t-{n}",
            "error_message": "Websocket connection to destination timed out",
        }
        for n in (1, 2)
    ]


async def test_groups_are_per_destination_host_or_application(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = _settings(make_settings, alert_webhook_url=sink_servers["webhook"].url)
    bodies = [
        _failure(1, "wss://a.example.com/x?call=1"),
        _failure(2, "wss://a.example.com/x?call=2"),  # same host: grouped with 1
        _failure(3, "wss://b.example.com/x"),
        _failure(4, None),  # no destination: grouped by application
        _failure(5, None),
        _failure(6, None, applicationId="another-app"),
    ]
    async with running_workers(settings, redis):
        for n, body in enumerate(bodies, 1):
            await add_events(redis, settings, body)
            await wait_handled(redis, settings, n)
    firsts = _by_kind(sink_servers["webhook"], "alert")
    assert sorted(a["call_id"] for a in firsts) == ["c-1", "c-3", "c-4", "c-6"]


async def test_a_group_firing_again_after_the_repeat_interval_alerts_at_once(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = _settings(
        make_settings,
        alert_webhook_url=sink_servers["webhook"].url,
        alert_group_interval="100ms",
        alert_repeat_interval="400ms",
    )
    webhook = sink_servers["webhook"]
    keys = Keys(settings.key_prefix)
    async with running_workers(settings, redis):
        await add_events(redis, settings, _failure(1))
        await eventually(lambda: webhook.accepted, what="first alert")
        # The group is forgotten once its repeat interval has passed.
        await eventually(
            lambda: _gone(redis, keys.alert_groups_due), timeout_s=10, what="group quiet"
        )
        await eventually(lambda: _no_groups(redis, settings), timeout_s=10, what="group expired")
        await add_events(redis, settings, _failure(2))
        await eventually(lambda: len(webhook.accepted) == 2, what="reminder alert")
    assert [a["kind"] for a in webhook.accepted] == ["alert", "alert"]
    assert [a["call_id"] for a in webhook.accepted] == ["c-1", "c-2"]


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def _no_groups(redis: Redis, settings: Settings) -> bool:
    pattern = Keys(settings.key_prefix).alert_group("*")
    # The hash tag's braces are glob characters too; escape them for SCAN's MATCH.
    pattern = pattern.replace("{", "\\{").replace("}", "\\}")
    return not [key async for key in redis.scan_iter(match=pattern)]
