"""Decoding: every documented variant is accepted, every fault is named with its path."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from shared.events import (
    MAX_NESTING,
    Available,
    DecodeFailure,
    Rejected,
    Started,
    Stopped,
    UnknownEvent,
    decode_event,
    event_identity,
)
from tests.bodies import BROKE_THE_DECODER, DRAFT, SEED_EXAMPLES, error_body, sample_event


@pytest.mark.parametrize("body", SEED_EXAMPLES, ids=["enqueued", "destination"])
def test_seed_examples_decode(body: bytes) -> None:
    event = decode_event(body)
    assert isinstance(event, Stopped)
    assert event.cause == "closed"
    info = event.transcription_info
    assert info.id == "t-95ac90b3-e9cd80fa-fca7-4d12-9109-2990afe4d8c5"
    assert info.tracks == ["inbound", "outbound"]
    # PT1M52.217257456S: nanoseconds cut to microseconds.
    assert info.duration == timedelta(minutes=1, seconds=52, microseconds=217257)


def test_seed_stabilized_string_is_understood() -> None:
    event = decode_event(SEED_EXAMPLES[1])
    assert isinstance(event, Stopped)
    assert event.transcription_info.is_stabilized is True
    assert event.transcription_info.destination == "wss://websocket.myapp.example"


@pytest.mark.parametrize(
    ("event_type", "cls"),
    [("started", Started), ("rejected", Rejected), ("stopped", Stopped), ("available", Available)],
)
@pytest.mark.parametrize("object_key", ["realTimeTranscription", "transcription"])
def test_every_type_under_both_object_keys(event_type: str, cls: type, object_key: str) -> None:
    body = msgspec.json.encode(
        sample_event(event_type, object_key=object_key, transcription_id="t-1")
    )
    event = decode_event(body)
    assert isinstance(event, cls)
    assert event.transcription_info.id == "t-1"


@pytest.mark.parametrize(("raw", "expected"), [(True, True), ("false", False), ("True", True)])
def test_stabilized_boolean_or_string(raw: object, expected: bool) -> None:
    event = sample_event("started")
    event["realTimeTranscription"]["stabilized"] = raw
    decoded = decode_event(msgspec.json.encode(event))
    assert not isinstance(decoded, DecodeFailure | UnknownEvent)
    assert decoded.transcription_info.is_stabilized is expected


def test_optional_fields_absent_or_null_and_unknown_fields_ignored() -> None:
    body = error_body(
        answerTime=None,
        tag=None,
        errorMessage=None,
        enqueuedTime=...,
        callUrl=...,
        privacy=False,
        callerDisplayName="",
        brandNewField={"x": [1]},
    )
    event = decode_event(body)
    assert isinstance(event, Stopped)
    assert event.answer_time is None
    assert event.tag is None
    assert event.privacy is False


@pytest.mark.parametrize(
    "caller", ["Private", "Restricted", "Unavailable", "Anonymous", "+15551112222"]
)
def test_from_is_not_validated_as_e164(caller: str) -> None:
    assert isinstance(decode_event(error_body(**{"from": caller})), Stopped)


def test_unknown_cause_is_kept() -> None:
    event = decode_event(error_body(cause="brand-new-cause"))
    assert isinstance(event, Stopped)
    assert event.cause == "brand-new-cause"


def test_draft_casing_of_event_type_is_accepted() -> None:
    event = decode_event(error_body(eventType="realtimeTranscriptionStopped"))
    assert isinstance(event, Stopped)


def test_unknown_event_type_is_recognised_not_refused() -> None:
    event = decode_event(error_body(eventType="realTimeTranscriptionPaused"))
    assert event == UnknownEvent(event_type="realTimeTranscriptionPaused", call_id=event.call_id)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        (b"", "$", "truncated"),
        (b'{"eventType": "realTimeTr', "$", "truncated"),
        (b"\xff\xfe{}", "$", "malformed"),
        (b"[1, 2]", "$", "Expected `object`, got `array`"),
        (b'"text"', "$", "Expected `object`"),
        (b"{}", "$.eventType", "missing required field"),
        (error_body(eventType=7), "$.eventType", "Expected `str`, got `int`"),
        (error_body(callId=...), "$.callId", "missing required field"),
        (error_body(eventType="realtimeTranscriptionStopped", callId=12), "$.callId", "got `int`"),
        (error_body(eventType="realtimeTranscriptionStopped", cause=...), "$.cause", "missing"),
        (error_body(callId=12), "$.callId", "Expected `str`, got `int`"),
        (error_body(cause=...), "$.cause", "missing required field"),
        (error_body(eventTime="yesterday"), "$.eventTime", "Invalid RFC3339"),
        (
            error_body(realTimeTranscription=...),
            "$.realTimeTranscription",
            "missing required field",
        ),
        (error_body(realTimeTranscription={"name": "x"}), "$.realTimeTranscription.id", "missing"),
        (
            error_body(realTimeTranscription={"id": "t", "tracks": "inbound"}),
            "$.realTimeTranscription.tracks",
            "Expected `array`",
        ),
        (
            error_body(realTimeTranscription={"id": "t", "duration": "ten minutes"}),
            "$.realTimeTranscription.duration",
            "duration",
        ),
        (
            error_body(realTimeTranscription={"id": "t", "stabilized": "maybe"}),
            "$.realTimeTranscription.stabilized",
            "Invalid enum value",
        ),
    ],
)
def test_malformed_bodies_say_what_and_where(body: bytes, path: str, fragment: str) -> None:
    failure = decode_event(body)
    assert isinstance(failure, DecodeFailure)
    assert failure.path == path
    assert fragment.lower() in failure.error.lower()


@pytest.mark.parametrize(
    ("body", "path", "fragment"), BROKE_THE_DECODER.values(), ids=BROKE_THE_DECODER.keys()
)
def test_bodies_that_raised_are_failures_naming_the_fault(
    body: bytes, path: str, fragment: str
) -> None:
    failure = decode_event(body)
    assert isinstance(failure, DecodeFailure)
    assert failure.path == path
    assert fragment.lower() in failure.error.lower()


def _nested(depth: int, *, objects: bool = False) -> bytes:
    """A value `depth` levels deep: arrays, or objects of one member."""
    if objects:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


# The top-level object is the first level: a value under one of its members may be
# MAX_NESTING - 1 deep.
_AT_THE_LIMIT = MAX_NESTING - 1


@pytest.mark.parametrize("objects", [False, True], ids=["arrays", "objects"])
@pytest.mark.parametrize("event_type", ["realTimeTranscriptionStopped", DRAFT, "somethingNew"])
def test_nesting_past_the_limit_is_refused_whatever_the_interpreters_stack(
    event_type: str, objects: bool
) -> None:
    # msgspec's own bound is the interpreter's stack: 1,000 levels raised on Python 3.11,
    # 9,000 decoded on 3.13. A receiver and a worker on different Pythons must agree.
    base = error_body(eventType=event_type)[:-1]
    failure = decode_event(base + b', "x": ' + _nested(_AT_THE_LIMIT + 1, objects=objects) + b"}")
    assert isinstance(failure, DecodeFailure)
    assert failure.path == "$"
    assert f"nested too deeply: more than {MAX_NESTING} levels" in failure.error
    accepted = decode_event(base + b', "x": ' + _nested(_AT_THE_LIMIT, objects=objects) + b"}")
    assert not isinstance(accepted, DecodeFailure)


def test_nesting_past_the_limit_is_named_before_a_field_in_error() -> None:
    # On 3.11 the stack ran out before the missing `eventType` was seen; on 3.13 the
    # missing field was named. Now both name the nesting.
    failure = decode_event(b'{"x": ' + _nested(_AT_THE_LIMIT + 1, objects=True) + b"}")
    assert failure == DecodeFailure(
        error=f"JSON is nested too deeply: more than {MAX_NESTING} levels", path="$"
    )


def test_brackets_inside_strings_are_not_nesting() -> None:
    brackets = b"[{" * 5_000
    # Escapes too: a quote inside a string does not end it, a backslash before the
    # closing quote does not escape it.
    strings = b'"' + brackets + b'", "q\\"[": "\\\\", "[": "]}\\\\' + brackets + b'"'
    body = error_body()[:-1] + b', "note": ' + strings + b"}"
    assert isinstance(decode_event(body), Stopped)


def test_huge_numbers_in_ignored_fields_are_ignored_under_either_casing() -> None:
    for event_type in ("realTimeTranscriptionStopped", DRAFT):
        body = error_body(eventType=event_type)[:-1] + b', "x": 1e999, "y": 1' + b"0" * 400 + b"}"
        assert isinstance(decode_event(body), Stopped)


def test_identity_is_type_call_and_transcription() -> None:
    a = decode_event(error_body(callId="c-1"))
    b = decode_event(error_body(callId="c-1", eventTime="2030-01-01T00:00:00Z"))
    c = decode_event(error_body(callId="c-2"))
    assert isinstance(a, Stopped)
    assert isinstance(b, Stopped)
    assert isinstance(c, Stopped)
    assert a.transcription_info.id != b.transcription_info.id  # random ids per sample
    same = decode_event(error_body(callId="c-1", realTimeTranscription={"id": "t-9"}))
    again = decode_event(error_body(callId="c-1", realTimeTranscription={"id": "t-9"}, tag="x"))
    assert isinstance(same, Stopped)
    assert isinstance(again, Stopped)
    assert event_identity(same) == event_identity(again)
    assert event_identity(same) != event_identity(c)
