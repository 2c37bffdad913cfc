"""Where notifications go: the structured log (always), a JSON webhook, Slack, PagerDuty."""

from __future__ import annotations

from typing import Final, Protocol

import msgspec
from structlog.typing import FilteringBoundLogger

from .delivery import Poster
from .formats import pagerduty_event, slack_message
from .notifications import (
    Notification,
    QuietChange,
    StaleResolved,
    Summary,
    notification_key_of,
)
from .options import AlertOptions
from .rules import Alert

__all__ = [
    "LogSink",
    "PagerDutySink",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "http_sinks",
]

_encode: Final = msgspec.json.encode


class Sink(Protocol):
    name: str

    async def send(self, notification: Notification, log: FilteringBoundLogger) -> None: ...


class LogSink:
    """`transcription_alert` (and its summaries and rate changes) as structured log lines."""

    name = "log"

    async def send(self, notification: Notification, log: FilteringBoundLogger) -> None:
        if isinstance(notification, Alert):
            fields = msgspec.structs.asdict(notification)
            if notification.severity == "error":
                log.error("transcription_alert", **fields)
            else:
                log.warning("transcription_alert", **fields)
        elif isinstance(notification, Summary):
            summary_log = log.error if notification.severity == "error" else log.warning
            summary_log(
                "transcription_alert_summary",
                summary_key=notification.summary_key,
                group=notification.group,
                count=notification.count,
                window_start=notification.window_start,
                window_end=notification.window_end,
                example_alert_keys=[a.alert_key for a in notification.examples],
            )
        elif isinstance(notification, StaleResolved):
            log.info(
                "transcription_alert_resolved",
                alert_key=notification.dedup_key,
                resolved_at=notification.at,
                cause=notification.alert.cause,
                call_id=notification.alert.call_id,
                transcription_id=notification.alert.transcription_id,
            )
        elif isinstance(notification, QuietChange):
            quiet_log = log.error if notification.status == "firing" else log.info
            quiet_log("events_feed_quiet", **msgspec.structs.asdict(notification))
        else:
            rate_log = log.error if notification.status == "firing" else log.info
            rate_log("transcription_failure_rate", **msgspec.structs.asdict(notification))


class WebhookSink:
    """The notification as JSON, with a `kind` field; `Idempotency-Key` names the notification."""

    name = "webhook"

    def __init__(self, poster: Poster, url: str) -> None:
        self._poster = poster
        self._url = url

    async def send(self, notification: Notification, log: FilteringBoundLogger) -> None:
        headers = {"Idempotency-Key": notification_key_of(notification)}
        await self._poster.post(self.name, self._url, _encode(notification), headers=headers)


class SlackSink:
    name = "slack"
    # Slack accepts about one message a second per incoming webhook.
    interval_ms: Final = 1000

    def __init__(self, poster: Poster, url: str) -> None:
        self._poster = poster
        self._url = url

    async def send(self, notification: Notification, log: FilteringBoundLogger) -> None:
        body = _encode(slack_message(notification))
        await self._poster.post(self.name, self._url, body, interval_ms=self.interval_ms)


class PagerDutySink:
    """Events API v2: `trigger` with the alert's dedup key; `resolve` when the rate recovers."""

    name = "pagerduty"

    def __init__(self, poster: Poster, url: str, routing_key: str) -> None:
        self._poster = poster
        self._url = url
        self._routing_key = routing_key

    async def send(self, notification: Notification, log: FilteringBoundLogger) -> None:
        body = _encode(pagerduty_event(notification, self._routing_key))
        await self._poster.post(self.name, self._url, body)


def http_sinks(options: AlertOptions, poster: Poster) -> list[Sink]:
    """The sinks configured by `RTT_ALERT_*` settings; several may be on at once."""
    sinks: list[Sink] = []
    if options.webhook_url:
        sinks.append(WebhookSink(poster, options.webhook_url))
    if options.slack_webhook_url:
        sinks.append(SlackSink(poster, options.slack_webhook_url))
    if options.pagerduty_routing_key:
        sinks.append(PagerDutySink(poster, options.pagerduty_url, options.pagerduty_routing_key))
    return sinks
