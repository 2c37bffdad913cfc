"""Values as redis-py hands them back: text as bytes or str, stream ids as `<ms>-<seq>`.

Stream ids count milliseconds of the server's wall clock; `now_ms` is that clock here, for
ages measured against them and for the times the worker records.
"""

from __future__ import annotations

import time

__all__ = ["as_text", "id_ms", "now_ms", "parse_stream_id"]


def as_text(value: object, errors: str = "strict") -> str:
    """A name or value from a reply as text: bytes-like decoded as UTF-8, the rest `str()`."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode(errors=errors)
    return str(value)


def parse_stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as (milliseconds, sequence): sorts as the stream does."""
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def id_ms(entry_id: bytes | str) -> int:
    """The milliseconds part of a stream id: when the entry was added."""
    return int(as_text(entry_id).partition("-")[0])


def now_ms() -> int:
    return time.time_ns() // 1_000_000
