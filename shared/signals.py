"""Stop requests for the synchronous supervisors (`rtt serve`, `--processes`)."""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["StopSignals"]


class StopSignals:
    """Turns SIGINT and SIGTERM into a flag that a supervisor's loop polls.

    A flag, not an exception: a signal arriving while children are being started or
    stopped must not cut that work in half.
    """

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._request)
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
