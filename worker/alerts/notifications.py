"""What sinks are given: an alert, a group summary, or a change of the failure rate.

Two keys, for two questions. `notification_key_of` names one notification: each alert,
summary and rate change has its own, and a resend of it keeps it, so a receiver folding
repeated keys (the webhook's `Idempotency-Key`) keeps every distinct notification once.
`dedup_key` names the incident, as PagerDuty means it: a group's summaries update its
first alert's incident, a rate incident's resolve closes its trigger.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from .rules import Alert, Severity

__all__ = [
    "Notification",
    "QuietChange",
    "RateChange",
    "StaleResolved",
    "Summary",
    "notification_decoder",
    "notification_key_of",
]


class Summary(msgspec.Struct, frozen=True, kw_only=True, tag="summary", tag_field="kind"):
    """Alerts of one group that arrived after the group's first alert, in one window.

    Every alert is counted in exactly one notification: the group's first alert stands
    for itself, and each summary's `count` covers the alerts after it, so over a burst the
    first alert plus the summaries' counts add up to the number of failures.
    """

    summary_key: str
    dedup_key: str  # the alert key of the group's first alert: one incident per group cycle
    severity: Severity
    group: dict[str, str]
    count: int
    examples: list[Alert]
    window_start: str
    window_end: str


class RateChange(msgspec.Struct, frozen=True, kw_only=True, tag="rate", tag_field="kind"):
    """The share of failed stops crossed the threshold (`firing`) or fell back (`resolved`)."""

    status: Literal["firing", "resolved"]
    dedup_key: str  # the same for an incident's firing and resolved notifications
    incident: int
    failed: int
    stops: int
    share: float
    threshold: float
    min_stops: int
    window_s: float
    at: str


class StaleResolved(
    msgspec.Struct, frozen=True, kw_only=True, tag="stale_resolved", tag_field="kind"
):
    """A stale transcription's Stopped (or Rejected) came after all: its alert is over."""

    dedup_key: str  # the stale alert's key, as PagerDuty and the webhook saw it
    alert: Alert  # the stale alert it resolves
    at: str


class QuietChange(msgspec.Struct, frozen=True, kw_only=True, tag="quiet", tag_field="kind"):
    """No event was received for `quiet_after_s` (`firing`), or events came again (`resolved`)."""

    status: Literal["firing", "resolved"]
    dedup_key: str  # the same for an incident's firing and resolved notifications
    incident: int
    last_event_at: str  # when the newest event was stored
    quiet_s: float
    quiet_after_s: float
    at: str


Notification: TypeAlias = Alert | Summary | RateChange | StaleResolved | QuietChange

notification_decoder: msgspec.json.Decoder[Notification] = msgspec.json.Decoder(Notification)


def notification_key_of(notification: Notification) -> str:
    """This notification's own name: the same for a resend, different for any other."""
    if isinstance(notification, Alert):
        return notification.alert_key
    if isinstance(notification, Summary):
        return notification.summary_key
    if isinstance(notification, StaleResolved):
        return f"{notification.dedup_key}-resolved"
    return f"{notification.dedup_key}-{notification.status}"
