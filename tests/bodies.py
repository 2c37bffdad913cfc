"""Event bodies for the tests: the seed page's examples verbatim, and generated ones."""

from __future__ import annotations

import re
from pathlib import Path

from rtt.samples import sample_body, sample_event

__all__ = ["SEED_EXAMPLES", "sample_body", "sample_event"]

_SEED = Path(__file__).parent / "data" / "real-time-transcription-stopped.txt"


def _seed_examples() -> list[bytes]:
    text = _SEED.read_text()
    # Each example is the JSON object that follows a `Content-Type` line.
    return [
        m.encode()
        for m in re.findall(r"Content-Type: application/json\n\n(\{.*?\n\})(?!,)", text, re.S)
    ]


SEED_EXAMPLES = _seed_examples()
