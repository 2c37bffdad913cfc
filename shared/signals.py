"""Stop requests for the synchronous supervisors (`rtt serve`, `--processes`)."""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["StopSignals"]


class StopSignals:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag that a supervisor's loop polls.

    A flag, not an exception: a signal arriving while children are being started or
    stopped must not cut that work in half. SIGHUP is a closed terminal: it stops as
    cleanly as Ctrl-C, instead of killing the supervisor and orphaning its children.
    """

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._request)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
