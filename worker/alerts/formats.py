"""How each notification reads in Slack and in PagerDuty (the webhook gets it as it is)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import msgspec

from .notifications import Notification, QuietChange, RateChange, StaleResolved, Summary
from .rules import Alert

__all__ = ["pagerduty_event", "slack_message"]

_ICONS: Final = {"error": ":red_circle:", "warning": ":warning:"}
_VERBS: Final = {
    "realTimeTranscriptionStopped": "stopped",
    "realTimeTranscriptionRejected": "rejected",
}
_MAX_EXAMPLES_SHOWN: Final = 3


def _verb(alert: Alert) -> str:
    if alert.cause == "stale":  # raised on a Started whose end never came
        return "open too long"
    return _VERBS.get(alert.event_type, alert.event_type)


def _labels(group: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in group.items())


def _seconds(value: float) -> str:
    return str(timedelta(seconds=round(value)))


def headline(notification: Notification) -> str:
    """One line that says what happened; Slack's fallback text and PagerDuty's summary."""
    if isinstance(notification, Alert):
        text = f"Transcription {_verb(notification)}: {notification.cause}"
        if notification.error_message:
            text += f": {notification.error_message}"
        return text
    if isinstance(notification, Summary):
        noun = "failure" if notification.count == 1 else "failures"
        return f"{notification.count} more transcription {noun} ({_labels(notification.group)})"
    if isinstance(notification, StaleResolved):
        return f"Transcription {notification.alert.transcription_id} ended after all: resolved"
    if isinstance(notification, QuietChange):
        if notification.status == "firing":
            return (
                f"No events received for {_seconds(notification.quiet_s)} "
                f"(since {notification.last_event_at})"
            )
        return f"Events received again (at {notification.last_event_at})"
    if notification.status == "firing":
        return (
            f"Transcription failure rate {notification.share:.1%}: {notification.failed} of "
            f"{notification.stops} stops failed in {_seconds(notification.window_s)}"
        )
    return (
        f"Transcription failure rate back to {notification.share:.1%} "
        f"({notification.failed} of {notification.stops} stops)"
    )


# --- Slack incoming webhook ------------------------------------------------------------


def _esc(text: str) -> str:
    """Slack mrkdwn needs &, < and > escaped; nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str | None) -> str:
    return f"`{_esc(text)}`" if text else "_none_"


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _alert_blocks(alert: Alert) -> list[dict[str, Any]]:
    duration = "_unknown_" if alert.duration_s is None else f"{alert.duration_s:.1f} s"
    fields = [
        f"*Call*\n{_code(alert.call_id)}",
        f"*Transcription*\n{_code(alert.transcription_name)} ({_code(alert.transcription_id)})",
        f"*Destination*\n{_code(alert.destination)}",
        f"*Application*\n{_code(alert.application_id)}",
        f"*Account*\n{_code(alert.account_id)}",
        f"*Tracks*\n{_esc(', '.join(alert.tracks)) or '_none_'}",
        f"*Duration*\n{duration}",
        f"*Event time*\n{_esc(alert.event_time)}",
    ]
    return [
        _header(f"{_ICONS[alert.severity]} Transcription {_verb(alert)}: {alert.cause}"),
        _section(_esc(alert.error_message or "(no error message)")),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        _context(f"alert key {_code(alert.alert_key)}"),
    ]


def _summary_blocks(summary: Summary) -> list[dict[str, Any]]:
    lines = [
        f"• {_code(a.call_id)} {_code(a.transcription_id)}: {_esc(a.error_message or a.cause)}"
        for a in summary.examples[:_MAX_EXAMPLES_SHOWN]
    ]
    more = summary.count - len(lines)
    if more > 0:
        lines.append(f"…and {more} more")
    return [
        _header(f"{_ICONS[summary.severity]} {headline(summary)}"),
        _section(f"Between {summary.window_start} and {summary.window_end}:\n" + "\n".join(lines)),
        _context(f"group {_esc(_labels(summary.group))} · first alert {_code(summary.dedup_key)}"),
    ]


def _rate_blocks(change: RateChange) -> list[dict[str, Any]]:
    icon = ":rotating_light:" if change.status == "firing" else ":white_check_mark:"
    detail = (
        f"{change.failed} of {change.stops} transcription stops failed in the last "
        f"{_seconds(change.window_s)} (threshold {change.threshold:.1%}, "
        f"at least {change.min_stops} stops)."
    )
    return [
        _header(f"{icon} {headline(change)}"),
        _section(detail),
        _context(f"incident {change.incident} · {_esc(change.at)}"),
    ]


def slack_message(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` for notifications, `blocks` for the channel."""
    if isinstance(notification, Alert):
        blocks = _alert_blocks(notification)
    elif isinstance(notification, Summary):
        blocks = _summary_blocks(notification)
    elif isinstance(notification, QuietChange):
        icon = ":rotating_light:" if notification.status == "firing" else ":white_check_mark:"
        blocks = [
            _header(f"{icon} {headline(notification)}"),
            _context(f"feed quiet incident {notification.incident} · {_esc(notification.at)}"),
        ]
    elif isinstance(notification, StaleResolved):
        blocks = [
            _header(f":white_check_mark: {headline(notification)}"),
            _context(f"alert key {_code(notification.dedup_key)} · {_esc(notification.at)}"),
        ]
    else:
        blocks = _rate_blocks(notification)
    return {"text": _esc(headline(notification)), "blocks": blocks}


# --- PagerDuty Events API v2 ------------------------------------------------------------


def _alert_source(alert: Alert) -> str:
    return alert.destination_host or f"application {alert.application_id}"


def pagerduty_event(notification: Notification, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events v2 `trigger` (or `resolve` for a recovered failure rate)."""
    if isinstance(notification, StaleResolved) or (
        isinstance(notification, RateChange | QuietChange) and notification.status == "resolved"
    ):
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": notification.dedup_key,
        }
    payload: dict[str, Any] = {
        "summary": headline(notification)[:1024],
        "component": "real-time-transcription",
    }
    if isinstance(notification, Alert):
        dedup_key = notification.alert_key
        payload |= {
            "source": _alert_source(notification),
            "severity": notification.severity,
            "timestamp": notification.event_time,
            "group": notification.application_id,
            "class": notification.cause,
            "custom_details": msgspec.structs.asdict(notification),
        }
    elif isinstance(notification, Summary):
        dedup_key = notification.dedup_key
        group = notification.group
        source = group.get("destination_host") or f"application {group.get('application_id')}"
        payload |= {
            "source": source,
            "severity": notification.severity,
            "timestamp": notification.window_end,
            "class": group.get("cause", "transcription-failure"),
            "custom_details": {
                "count": notification.count,
                "group": group,
                "window_start": notification.window_start,
                "window_end": notification.window_end,
                "examples": [
                    {
                        "call_id": a.call_id,
                        "transcription_id": a.transcription_id,
                        "error_message": a.error_message,
                    }
                    for a in notification.examples
                ],
            },
        }
    elif isinstance(notification, QuietChange | RateChange):
        dedup_key = notification.dedup_key
        quiet = isinstance(notification, QuietChange)
        payload |= {
            "source": "rtt-events",
            "severity": "critical",
            "timestamp": notification.at,
            "class": "events-feed-quiet" if quiet else "transcription-failure-rate",
            "custom_details": msgspec.structs.asdict(notification),
        }
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "rtt-events",
        "payload": payload,
    }
