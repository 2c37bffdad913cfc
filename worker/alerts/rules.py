"""Which events alert, how loudly, and what an alert carries."""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from shared.events import Event, Rejected, Stopped
from shared.settings import Settings

__all__ = ["Alert", "Severity", "alert_for"]

Severity = Literal["error", "warning"]


class Alert(msgspec.Struct, frozen=True, kw_only=True):
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


def alert_for(event: Event, settings: Settings) -> Alert | None:
    """An alert for a failed Stopped or Rejected event, or None."""
    if not isinstance(event, Stopped | Rejected):
        return None
    severity: Severity
    if event.cause in settings.alert_causes:
        severity = "error"
    elif isinstance(event, Rejected) and event.cause in settings.alert_warning_causes:
        severity = "warning"
    else:
        return None
    info = event.transcription_info
    identity = f"{info.id}|{event.event_type}|{event.cause}"
    return Alert(
        # One alert per (transcription, event type, cause): the key is that triple, hashed
        # to a fixed length so it fits PagerDuty's dedup_key and Redis keys alike.
        alert_key=hashlib.sha256(identity.encode()).hexdigest()[:32],
        severity=severity,
        event_type=event.event_type,
        cause=event.cause,
        error_message=event.error_message,
        call_id=event.call_id,
        transcription_id=info.id,
        transcription_name=info.name,
        destination=info.destination,
        account_id=event.account_id,
        application_id=event.application_id,
        tracks=list(info.tracks),
        duration_s=info.duration.total_seconds() if info.duration is not None else None,
        event_time=event.event_time.isoformat(),
    )
