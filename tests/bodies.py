"""Event bodies for the tests: the seed page's examples verbatim, and generated ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from rtt.samples import sample_body, sample_event

__all__ = [
    "BROKE_THE_DECODER",
    "DRAFT",
    "SEED_EXAMPLES",
    "error_body",
    "sample_bodies",
    "sample_body",
    "sample_event",
]

_SEED = Path(__file__).parent / "data" / "real-time-transcription-stopped.txt"


def _seed_examples() -> list[bytes]:
    text = _SEED.read_text()
    # Each example is the JSON object that follows a `Content-Type` line.
    return [
        m.encode()
        for m in re.findall(r"Content-Type: application/json\n\n(\{.*?\n\})(?!,)", text, re.S)
    ]


SEED_EXAMPLES = _seed_examples()


def error_body(**changes: object) -> bytes:
    """The sample Stopped with cause `error`, with fields changed (`...` drops one)."""
    event = sample_event("stopped", cause="error")
    for key, value in changes.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return msgspec.json.encode(event)


DRAFT = "realtimeTranscriptionStopped"
DEEP = b"[" * 1000 + b"]" * 1000
# Bodies on which the decoder raised instead of answering (a 500, nothing kept).
BROKE_THE_DECODER = {
    "truncated after an unknown type": (
        b'{"eventType": "realTimeTranscriptionPaused", "callId": "c-1", "x": [1, 2',
        "$",
        "truncated",
    ),
    "NaN": (b'{"eventType": "realTimeTranscriptionPaused", "callId": NaN}', "$", "malformed"),
    "invalid UTF-8 in a string": (b'{"callId": "\xff\xfe"}', "$", "UTF-8"),
    "invalid UTF-8 after an unknown type": (
        b'{"eventType": "somethingNew", "callId": "\xff\xfe"}',
        "$",
        "UTF-8",
    ),
    "draft casing, truncated": (error_body(eventType=DRAFT)[:-3], "$", "truncated"),
    "draft casing, NaN": (error_body(eventType=DRAFT)[:-1] + b', "x": NaN}', "$", "malformed"),
    "deep nesting under an ignored field": (
        error_body()[:-1] + b', "ignored": ' + DEEP + b"}",
        "$",
        "nested too deeply",
    ),
    "deep nesting, unknown type": (
        b'{"eventType": "somethingNew", "x": ' + DEEP + b"}",
        "$",
        "nested too deeply",
    ),
    "deep nesting, draft casing": (
        error_body(eventType=DRAFT)[:-1] + b', "x": ' + DEEP + b"}",
        "$",
        "nested too deeply",
    ),
    "deep objects": (b'{"a":' * 1000 + b"1" + b"}" * 1000, "$", "nested too deeply"),
}


def sample_bodies(
    count: int, event_type: str = "realTimeTranscriptionStopped", **changes: Any
) -> list[bytes]:
    """`count` sample bodies of one type, calls c-0, c-1...; `changes` as `sample_body`."""
    return [sample_body(event_type, call_id=f"c-{n}", **changes) for n in range(count)]
