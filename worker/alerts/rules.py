"""Which events alert, how loudly, what an alert carries, and which group it joins."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import urlsplit

import msgspec

from shared.events import Event, Rejected, Started, Stopped

from .options import AlertOptions

__all__ = [
    "GROUP_FIELDS",
    "Alert",
    "Severity",
    "alert_about",
    "alert_field",
    "alert_for",
    "alert_key",
    "check_group_by",
    "destination_host",
    "group_labels",
]

Severity = Literal["error", "warning"]


class Alert(msgspec.Struct, frozen=True, kw_only=True, tag="alert", tag_field="kind"):
    """Everything an operator needs to act, and a stable key that names this failure."""

    alert_key: str
    severity: Severity
    event_type: str
    cause: str
    error_message: str | None
    call_id: str
    transcription_id: str
    transcription_name: str | None
    destination: str | None
    account_id: str
    application_id: str
    tracks: list[str]
    duration_s: float | None
    event_time: str

    @property
    def destination_host(self) -> str | None:
        return destination_host(self.destination)


@functools.lru_cache(maxsize=4096)
def destination_host(destination: str | None) -> str | None:
    """The host of a websocket URL, for grouping; never raises, whatever the text holds.

    `urlsplit` refuses an unbalanced `[` (an IPv6 literal gone wrong); then the authority
    is cut out by hand, so the alert still groups by what looks like its host.
    """
    if not destination:
        return None
    try:
        host = urlsplit(destination).hostname
    except ValueError:
        authority = re.split(r"[/?#]", destination.partition("://")[2] or destination)[0]
        host = authority.rpartition("@")[2]
    return host or destination


def alert_for(event: Event, options: AlertOptions) -> Alert | None:
    """An alert for a failed Stopped or Rejected event, or None."""
    if not isinstance(event, Stopped | Rejected):
        return None
    severity: Severity
    if event.cause in options.causes:
        severity = "error"
    elif isinstance(event, Rejected) and event.cause in options.warning_causes:
        severity = "warning"
    else:
        return None
    duration = event.transcription_info.duration
    # One alert per (transcription, event type, cause).
    return alert_about(
        event,
        key_parts=(event.event_type, event.cause),
        severity=severity,
        cause=event.cause,
        error_message=event.error_message,
        duration_s=duration.total_seconds() if duration is not None else None,
    )


def alert_about(
    event: Started | Stopped | Rejected,
    *,
    key_parts: tuple[str, ...],
    severity: Severity,
    cause: str,
    error_message: str | None,
    duration_s: float | None,
) -> Alert:
    """The alert on `event`'s transcription. Its key is the transcription id and
    `key_parts`, hashed to a fixed length so it fits PagerDuty's dedup_key and Redis keys."""
    info = event.transcription_info
    return Alert(
        alert_key=alert_key(info.id, *key_parts),
        severity=severity,
        event_type=event.event_type,
        cause=cause,
        error_message=error_message,
        call_id=event.call_id,
        transcription_id=info.id,
        transcription_name=info.name,
        destination=info.destination,
        account_id=event.account_id,
        application_id=event.application_id,
        tracks=list(info.tracks),
        duration_s=duration_s,
        event_time=event.event_time.isoformat(),
    )


def alert_key(transcription_id: str, *key_parts: str) -> str:
    """The alert's key: its transcription and `key_parts`, hashed to a fixed length."""
    identity = "|".join((transcription_id, *key_parts))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


# Fields that group keys and silences may name: the alert's own, plus the host of its
# destination (a websocket URL differs per call only in its path or query).
GROUP_FIELDS: Final = frozenset(
    {name for name in Alert.__struct_fields__ if name not in {"tracks", "duration_s"}}
    | {"destination_host"}
)


def alert_field(alert: Alert, name: str) -> str | None:
    value = alert.destination_host if name == "destination_host" else getattr(alert, name)
    return None if value is None else str(value)


def check_group_by(group_by: Sequence[str]) -> None:
    unknown = sorted(set(group_by) - GROUP_FIELDS)
    if unknown or not group_by:
        raise ValueError(
            f"RTT_ALERT_GROUP_BY: unknown field(s) {', '.join(unknown) or '(none given)'}; "
            f"expected some of {', '.join(sorted(GROUP_FIELDS))}"
        )


def group_labels(alert: Alert, group_by: Sequence[str]) -> dict[str, str]:
    """The values that name this alert's group.

    `destination_host` falls back to the application id when the transcription has no
    destination, so failures without a websocket still group per application.
    """
    labels: dict[str, str] = {}
    for name in group_by:
        value = alert_field(alert, name)
        if value is None and name == "destination_host":
            labels["application_id"] = alert.application_id
            continue
        labels[name] = value if value is not None else ""
    return labels
