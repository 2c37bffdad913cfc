"""How big a reliability scenario runs: small in `make test`, full in `make test-reliability`."""

from __future__ import annotations

import os

__all__ = ["LONG", "size"]

LONG = os.environ.get("RTT_TEST_LONG") == "1"


def size(fast: int, long: int) -> int:
    return long if LONG else fast
