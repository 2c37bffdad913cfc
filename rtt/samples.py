"""Realistic Bandwidth events, for `rtt send`, the benchmarks and the tests."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

__all__ = ["CAUSES", "TYPE_BY_SHORT_NAME", "sample_body", "sample_event"]

TYPE_BY_SHORT_NAME = {
    "started": "realTimeTranscriptionStarted",
    "rejected": "realTimeTranscriptionRejected",
    "stopped": "realTimeTranscriptionStopped",
    "available": "realTimeTranscriptionAvailable",
}
CAUSES = {
    "realTimeTranscriptionStopped": ["closed", "connection-error", "error"],
    "realTimeTranscriptionRejected": ["connection-error", "duplicate", "error", "track-limit"],
}
_ERRORS = {
    "connection-error": "Websocket connection to destination timed out",
    "error": "Internal error while transcribing",
    "duplicate": "A real-time transcription with the name live_audience already exists",
    "track-limit": "Exceeded the maximum of 4 concurrent track transcriptions",
}
_ACCOUNT = "55555555"
_APPLICATION = "7fc9698a-b04a-468b-9e8f-91238c0d0086"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_event(
    event_type: str = "realTimeTranscriptionStopped",
    *,
    cause: str | None = None,
    call_id: str | None = None,
    transcription_id: str | None = None,
    destination: str | None = "wss://transcripts.example.com/live",
    object_key: str = "realTimeTranscription",
    rng: random.Random | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One event as Bandwidth would send it; `cause` defaults to the first known one."""
    event_type = TYPE_BY_SHORT_NAME.get(event_type, event_type)
    rng = rng or random.Random()
    call_id = call_id or f"c-{uuid.UUID(int=rng.getrandbits(128))}"
    transcription_id = transcription_id or f"t-{uuid.UUID(int=rng.getrandbits(128))}"
    now = datetime.now(UTC)
    started = now - timedelta(seconds=rng.uniform(5, 600))
    info: dict[str, Any] = {
        "id": transcription_id,
        "name": "live_audience",
        "startTime": _iso(started),
        "tracks": ["inbound", "outbound"],
    }
    if destination:
        info["destination"] = destination
        info["stabilized"] = "true"
    event: dict[str, Any] = {
        "accountId": _ACCOUNT,
        "answerTime": _iso(started - timedelta(seconds=1)),
        "applicationId": _APPLICATION,
        "callId": call_id,
        "callUrl": f"https://voice.bandwidth.com/api/v2/accounts/{_ACCOUNT}/calls/{call_id}",
        "direction": "inbound",
        "eventTime": _iso(now),
        "eventType": event_type,
        "from": "+15551112222",
        "startTime": _iso(started - timedelta(seconds=3)),
        "to": "+15553334444",
    }
    if event_type in CAUSES:
        event["cause"] = cause or CAUSES[event_type][0]
        if event["cause"] in _ERRORS:
            event["errorMessage"] = _ERRORS[event["cause"]]
    if event_type == "realTimeTranscriptionStopped":
        seconds = (now - started).total_seconds()
        info["duration"] = f"PT{int(seconds // 60)}M{seconds % 60:.9f}S"
    if event_type == "realTimeTranscriptionAvailable":
        info["status"] = "available"
        info["url"] = f"{event['callUrl']}/transcriptions/{transcription_id}"
        info["completedTime"] = _iso(now)
    event[object_key] = info
    event.update(overrides)
    return event


def sample_body(event_type: str = "realTimeTranscriptionStopped", **kwargs: Any) -> bytes:
    return msgspec.json.encode(sample_event(event_type, **kwargs))
