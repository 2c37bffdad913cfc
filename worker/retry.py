"""Backoff: how long to wait before the next attempt, for handlers and for Redis alike."""

from __future__ import annotations

import random

__all__ = ["backoff_s"]


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential with "equal jitter": base * 2^(attempt-1), capped, then drawn from its upper
    half. The upper half keeps delays growing from one attempt to the next while still
    spreading the retries of many workers apart.
    """
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    draw = (rng or random).random()
    return ceiling / 2 + draw * ceiling / 2
