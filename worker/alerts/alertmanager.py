"""Alertmanager as a sink: every alert, as Alertmanager's API v2 expects it.

Alertmanager groups, inhibits, silences and routes by itself, so it is given each alert,
not rtt-events' group summaries. A one-shot alert carries an `endsAt` and resolves by
itself; a failure-rate incident has none while it fires, is re-sent while it fires (an
alert not re-sent within Alertmanager's `resolve_timeout` resolves), and ends with
`endsAt` set to the moment it resolved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
from structlog.typing import FilteringBoundLogger

from .delivery import Poster
from .notifications import Notification, QuietChange, RateChange, StaleResolved, Summary
from .rules import Alert

__all__ = ["AlertmanagerSink", "alertmanager_alerts"]

_encode: Final = msgspec.json.encode


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(stamp: str) -> datetime:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


def _alert(
    alert: Alert, resolve_after: timedelta, generator: str, ends: datetime | None = None
) -> dict[str, Any]:
    stale = alert.cause == "stale"
    # A stale alert starts when it is raised: its Started is already `stale_after` old.
    starts = datetime.now(UTC) if stale else _parse(alert.event_time)
    if starts.tzinfo is None:
        starts = starts.replace(tzinfo=UTC)
    labels = {
        "alertname": "TranscriptionStale" if stale else "TranscriptionFailed",
        "severity": alert.severity,
        "cause": alert.cause,
        "event_type": alert.event_type,
        "application_id": alert.application_id,
        "account_id": alert.account_id,
        "destination_host": alert.destination_host or "",
        # One Alertmanager alert per transcription failure, as rtt-events counts them.
        "alert_key": alert.alert_key,
    }
    annotations = {
        "summary": f"Transcription {alert.transcription_id} {alert.cause}",
        "description": alert.error_message or "",
        "call_id": alert.call_id,
        "transcription_id": alert.transcription_id,
        "transcription_name": alert.transcription_name or "",
        "destination": alert.destination or "",
        "duration_s": "" if alert.duration_s is None else f"{alert.duration_s:g}",
    }
    return {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(starts if ends is None else min(starts, ends)),
        "endsAt": _iso(starts + resolve_after if ends is None else ends),
        "generatorURL": generator,
    }


def _incident(change: RateChange | QuietChange, generator: str) -> dict[str, Any]:
    """A failure-rate or quiet-feed incident: firing, or ending at its resolve."""
    if isinstance(change, RateChange):
        name = "TranscriptionFailureRate"
        summary = (
            f"{change.failed} of {change.stops} transcription stops failed in the last "
            f"{change.window_s:g} s (threshold {change.threshold:.0%})"
        )
    else:
        name, summary = "EventsFeedQuiet", f"No events received since {change.last_event_at}"
    payload: dict[str, Any] = {
        "labels": {"alertname": name, "severity": "error", "incident": str(change.incident)},
        "annotations": {"summary": summary},
        "generatorURL": generator,
    }
    if change.status == "resolved":
        payload["endsAt"] = _iso(_parse(change.at))
    return payload


def alertmanager_alerts(
    notification: Notification, resolve_after: timedelta, generator: str = ""
) -> list[dict[str, Any]]:
    """The body of `POST /api/v2/alerts` for a notification; empty for a summary."""
    if isinstance(notification, Alert):
        return [_alert(notification, resolve_after, generator)]
    if isinstance(notification, RateChange | QuietChange):
        return [_incident(notification, generator)]
    if isinstance(notification, StaleResolved):
        # The same labels as the stale alert, ending now: Alertmanager resolves it.
        return [_alert(notification.alert, resolve_after, generator, _parse(notification.at))]
    return []


class AlertmanagerSink:
    """`POST {url}/api/v2/alerts`; summaries are skipped (Alertmanager has every alert)."""

    name = "alertmanager"

    def __init__(self, poster: Poster, url: str, resolve_after: timedelta) -> None:
        self._poster = poster
        self._url = url.rstrip("/") + "/api/v2/alerts"
        self._resolve_after = resolve_after

    async def send(self, notification: Notification, log: FilteringBoundLogger) -> None:
        if isinstance(notification, Summary):
            return
        body = _encode(alertmanager_alerts(notification, self._resolve_after))
        await self._poster.post(self.name, self._url, body)
