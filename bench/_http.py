"""Waiting for a server a benchmark started: its health or readiness page answers."""

from __future__ import annotations

import time
import urllib.request

__all__ = ["wait_up"]


def wait_up(url: str, timeout_s: float = 30, poll_s: float = 0.05) -> None:
    """Return once `url` answers (any status); `TimeoutError` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not up in {timeout_s:g}s") from exc
            time.sleep(poll_s)
