"""The rate rule fires when too many stops fail over a sliding window, and says when it recovers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.settings import Settings
from tests.alerts.helpers import running_workers, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually


class Feed:
    """Numbered stops, added a phase at a time; each phase handled before the next."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis, self.settings, self.added = redis, settings, 0

    async def stops(self, cause: str, count: int, *, age_s: float = 0) -> None:
        at_ms = int((time.time() - age_s) * 1000)
        for _ in range(count):
            self.added += 1
            body = sample_event("stopped", cause=cause, transcription_id=f"t-{self.added}")
            await add_events(
                self.redis, self.settings, msgspec.json.encode(body), received_at_ms=at_ms
            )
        await wait_handled(self.redis, self.settings, self.added)


def _rate(server: SinkServer) -> list[dict[str, Any]]:
    return [body for body in server.accepted if body.get("kind") == "rate"]


def _pd_rate(server: SinkServer, prefix: str) -> list[dict[str, Any]]:
    return [b for b in server.accepted if b["dedup_key"].startswith(f"{prefix}-failure-rate-")]


def _slack_rate(server: SinkServer) -> list[str]:
    return [m["text"] for m in server.accepted if "failure rate" in m["text"]]


def _log_rate(logs: LogLines) -> list[dict[str, Any]]:
    return logs.named("transcription_failure_rate")


async def test_fires_past_the_threshold_and_resolves_below_it(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    prefix: str,
    logs: LogLines,
) -> None:
    settings = make_settings(
        **sink_settings(sink_servers),
        alert_rate_threshold="0.05",
        alert_rate_min_stops="20",
        alert_rate_window="5m",
    )
    webhook, pagerduty = sink_servers["webhook"], sink_servers["pagerduty"]
    feed = Feed(redis, settings)
    async with running_workers(settings, redis):
        # Failures from before the window do not count, however many.
        await feed.stops("error", 30, age_s=600)
        # 1 failed of 20 is 5 %: not more than the threshold.
        await feed.stops("closed", 19)
        await feed.stops("error", 1)
        # 2 of 21 is 9.5 %: fires, once.
        await feed.stops("connection-error", 1)
        await eventually(lambda: _rate(webhook), what="rate alert")
        # Still failing: no second notification while it fires.
        await feed.stops("error", 3)
        # 5 of 100 is 5 % again: resolved, once.
        await feed.stops("closed", 76)
        await eventually(lambda: len(_rate(webhook)) == 2, what="recovery")
        await eventually(lambda: len(_pd_rate(pagerduty, prefix)) == 2, what="PagerDuty resolve")
        await eventually(lambda: len(_slack_rate(sink_servers["slack"])) == 2, what="Slack")
        # The log is a sink of its own, with its own place in the outbox.
        await eventually(lambda: len(_log_rate(logs)) == 2, what="log sink")
    firing, resolved = _rate(webhook)
    dedup_key = f"{prefix}-failure-rate-1"
    assert firing == {
        "kind": "rate",
        "status": "firing",
        "dedup_key": dedup_key,
        "incident": 1,
        "failed": 2,
        "stops": 21,
        "share": 2 / 21,
        "threshold": 0.05,
        "min_stops": 20,
        "window_s": 300.0,
        "at": firing["at"],
    }
    assert resolved == {
        **firing,
        "status": "resolved",
        "failed": 5,
        "stops": 100,
        "share": 0.05,
        "at": resolved["at"],
    }
    assert firing["at"] <= resolved["at"]
    trigger, resolve = _pd_rate(pagerduty, prefix)
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == dedup_key
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"] == (
        "Transcription failure rate 9.5%: 2 of 21 stops failed in 0:05:00"
    )
    assert resolve == {
        "routing_key": "R0UTINGKEY0123456789012345678901",
        "event_action": "resolve",
        "dedup_key": dedup_key,
    }
    assert _slack_rate(sink_servers["slack"]) == [
        "Transcription failure rate 9.5%: 2 of 21 stops failed in 0:05:00",
        "Transcription failure rate back to 5.0% (5 of 100 stops)",
    ]
    assert [(line["level"], line["status"]) for line in _log_rate(logs)] == [
        ("error", "firing"),
        ("info", "resolved"),
    ]


async def test_resolves_when_failures_slide_out_of_the_window(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    webhook = sink_servers["webhook"]
    settings = make_settings(
        alert_webhook_url=webhook.url,
        alert_rate_min_stops="5",
        alert_rate_window="1s",
    )
    feed = Feed(redis, settings)
    async with running_workers(settings, redis):
        await feed.stops("error", 5)
        await eventually(lambda: _rate(webhook), what="rate alert")
        # No more traffic: the window empties and the rule resolves on its own.
        await eventually(lambda: len(_rate(webhook)) == 2, what="recovery without traffic")
    assert [(r["status"], r["failed"], r["stops"]) for r in _rate(webhook)] == [
        ("firing", 5, 5),
        ("resolved", 0, 0),
    ]
