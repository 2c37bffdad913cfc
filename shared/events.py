"""Bandwidth real-time transcription events: the types, and the one way to decode them.

The types follow Bandwidth's pages (see bandwidth-events.md); where the pages contradict
each other the Structs accept every variant seen, so a real delivery is never refused for
a documentation quirk. Fields we need to identify, route and alert on an event are
required; everything else is optional, and unknown fields are ignored.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final, Literal, TypeAlias

import msgspec

__all__ = [
    "EVENT_CLASSES",
    "MAX_NESTING",
    "Available",
    "DecodeFailure",
    "Event",
    "Rejected",
    "Started",
    "Stopped",
    "Transcription",
    "UnknownEvent",
    "decode_event",
    "event_identity",
    "unknown_cause",
]

STOPPED_CAUSES: Final = frozenset({"closed", "connection-error", "error"})
REJECTED_CAUSES: Final = frozenset({"connection-error", "duplicate", "error", "track-limit"})


class Transcription(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """The nested transcription object, under either of its two keys."""

    id: str
    name: str | None = None
    start_time: datetime | None = None
    tracks: list[str] = []
    destination: str | None = None
    # Every webhook example sends "true"/"false" strings; the BXML verb is boolean.
    stabilized: bool | Literal["true", "false", "True", "False"] | None = None
    # ISO 8601 with up to nanosecond digits; msgspec keeps microseconds.
    duration: timedelta | None = None
    status: str | None = None
    url: str | None = None
    completed_time: datetime | None = None

    @property
    def is_stabilized(self) -> bool | None:
        if isinstance(self.stabilized, str):
            return self.stabilized.lower() == "true"
        return self.stabilized


class _Event(msgspec.Struct, rename="camel", kw_only=True, frozen=True, tag_field="eventType"):
    account_id: str
    application_id: str
    call_id: str
    event_time: datetime
    call_url: str | None = None
    direction: str | None = None
    # Not validated as E.164: Private, Restricted, Unavailable and Anonymous arrive too.
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    start_time: datetime | None = None
    answer_time: datetime | None = None
    enqueued_time: datetime | None = None
    tag: str | None = None
    privacy: bool | None = None
    caller_display_name: str | None = None
    # The field tables say realTimeTranscription; the Stopped and Rejected examples
    # (and the seed page) say transcription. Both are accepted; see `transcription_info`.
    real_time_transcription: Transcription | None = None
    transcription: Transcription | None = None

    def __post_init__(self) -> None:
        if self.real_time_transcription is None and self.transcription is None:
            raise _MissingTranscription

    @property
    def transcription_info(self) -> Transcription:
        info = self.real_time_transcription or self.transcription
        assert info is not None  # guaranteed by __post_init__
        return info

    @property
    def event_type(self) -> str:
        return type(self).__struct_config__.tag  # type: ignore[return-value]


class Started(_Event, tag="realTimeTranscriptionStarted", frozen=True):
    pass


class Rejected(_Event, tag="realTimeTranscriptionRejected", frozen=True):
    # Known: connection-error, duplicate, error, track-limit. Others are kept, not refused.
    cause: str
    error_message: str | None = None
    original_transcription: Transcription | None = None


class Stopped(_Event, tag="realTimeTranscriptionStopped", frozen=True):
    # Known: closed, connection-error, error. Others are kept, not refused.
    cause: str
    error_message: str | None = None


class Available(_Event, tag="realTimeTranscriptionAvailable", frozen=True):
    pass


Event: TypeAlias = Started | Rejected | Stopped | Available
EVENT_CLASSES: Final[dict[str, type[Event]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (Started, Rejected, Stopped, Available)
}
_BY_LOWER_TYPE: Final = {name.lower(): name for name in EVENT_CLASSES}


class UnknownEvent(msgspec.Struct, frozen=True):
    """A JSON object with an `eventType` we do not know: parked, not refused."""

    event_type: str
    call_id: str | None


class DecodeFailure(msgspec.Struct, frozen=True):
    """Why a body is not an event, and where: `path` is a JSON path such as `$.callId`."""

    error: str
    path: str


class _MissingTranscription(ValueError):
    def __init__(self) -> None:
        super().__init__("Object missing required field `realTimeTranscription`")


class _Envelope(msgspec.Struct):
    eventType: str
    callId: str | None = None


# Bandwidth's events nest three levels deep. msgspec's own bound is the interpreter's
# stack, which differs by Python version: a fixed one lets every process agree.
MAX_NESTING: Final = 64
_TOO_DEEP: Final = f"JSON is nested too deeply: more than {MAX_NESTING} levels"
# A JSON string, escapes included; only applied to a body msgspec has read as JSON.
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS_AS_PARENTHESES: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS: Final = bytes(set(range(256)) - set(b"[]{}"))
_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_members_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_typed_decoders: Final = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_CLASSES.items()}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def decode_event(body: bytes) -> Event | UnknownEvent | DecodeFailure:
    """Decode a webhook body. Never raises: a failure says what is wrong and where."""
    try:
        decoded = _decode(body)
    except msgspec.ValidationError as exc:
        decoded = _failure(exc)
    except msgspec.DecodeError as exc:
        # Not JSON: truncated, NaN, invalid UTF-8, a lone surrogate escape...
        return DecodeFailure(error=str(exc), path="$")
    except RecursionError:
        # Past the interpreter's stack msgspec refuses nesting, even where ignored.
        return DecodeFailure(error=_TOO_DEEP, path="$")
    # Read as JSON, so it can be measured; the depth decides, as the stack does.
    return DecodeFailure(error=_TOO_DEEP, path="$") if _nested_too_deeply(body) else decoded


def _nested_too_deeply(json: bytes) -> bool:
    """Whether valid JSON nests past MAX_NESTING: 0.5 µs unless it opens that many."""
    if len(json) - len(json.translate(None, b"[{")) <= MAX_NESTING:
        return False
    brackets = _STRING.sub(b"", json).translate(_BRACKETS_AS_PARENTHESES, _NOT_BRACKETS)
    # Each pass takes away the innermost level: every "()" holds nothing more.
    for _ in range(MAX_NESTING):
        brackets = brackets.replace(b"()", b"")
        if not brackets:
            return False
    return True


def _decode(body: bytes) -> Event | UnknownEvent | DecodeFailure:
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        failure = _failure(exc)
        if failure.path != "$.eventType":
            return failure
    # An `eventType` outside the union: a casing variant, an unknown type, or a bad value.
    envelope = _envelope_decoder.decode(body)
    canonical = _BY_LOWER_TYPE.get(envelope.eventType.lower())
    if canonical is None:
        return UnknownEvent(event_type=envelope.eventType, call_id=envelope.callId)
    # Early drafts spelled the types `realtimeTranscription...`: rare, so the slow path.
    # Only the top level is taken apart; the rest is decoded by the typed decoder, with
    # its checks and its paths, as in the usual case.
    members = _members_decoder.decode(body)
    members["eventType"] = msgspec.Raw(msgspec.json.encode(canonical))
    event: Event = _typed_decoders[canonical].decode(msgspec.json.encode(members))
    return event


def _failure(exc: msgspec.ValidationError) -> DecodeFailure:
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    message, path = match["msg"], match["path"] or "$"
    missing = _MISSING.match(message)
    if missing:
        path = f"{path}.{missing['field']}"
    return DecodeFailure(error=message, path=path)


def event_identity(event: Event) -> str:
    """What makes two deliveries the same event: type, call and transcription."""
    return f"{event.event_type}:{event.call_id}:{event.transcription_info.id}"


def unknown_cause(event: Event) -> str | None:
    """A `cause` Bandwidth's pages do not list (kept, and worth a warning), else None."""
    if isinstance(event, Stopped):
        return None if event.cause in STOPPED_CAUSES else event.cause
    if isinstance(event, Rejected):
        return None if event.cause in REJECTED_CAUSES else event.cause
    return None
