"""The `transcription_alert` lines of a JSON log: how many, and the alert keys they name.

The alerts bench counts what its log received, so a consumer made faster by logging less
(or twice) is caught. Run as a program it reads the log on stdin, as `cat` would drain
a pipe, and prints its count as JSON: `python -m bench._alert_lines < log`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import msgspec

__all__ = ["AlertLines", "count_alert_lines"]

_MARK = b'"event":"transcription_alert"'


class AlertLines(msgspec.Struct, frozen=True):
    total: int  # lines
    keys: frozenset[str]  # their alert keys


class _Line(msgspec.Struct):
    event: str
    alert_key: str = ""


_decode_line = msgspec.json.Decoder(_Line).decode


def count_alert_lines(lines: Iterable[bytes]) -> AlertLines:
    total = 0
    keys: set[str] = set()
    for line in lines:
        if _MARK not in line:  # a cheap test before decoding the line
            continue
        parsed = _decode_line(line)
        if parsed.event == "transcription_alert":
            total += 1
            keys.add(parsed.alert_key)
    return AlertLines(total, frozenset(keys))


if __name__ == "__main__":
    sys.stdout.buffer.write(msgspec.json.encode(count_alert_lines(sys.stdin.buffer)))
