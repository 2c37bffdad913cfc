"""How big a reliability scenario runs: small in `make test`, full in `make test-reliability`."""

from __future__ import annotations

import os

__all__ = ["LONG", "size"]

LONG = bool(os.environ.get("RTT_RELIABILITY_LONG"))


def size(fast: int, long: int) -> int:
    return long if LONG else fast
