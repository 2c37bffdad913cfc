"""Stop requests for the synchronous supervisors (`rtt serve`, `--processes`), and the
stop signals that come once a program has stopped."""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["STOP_SIGNALS", "StopSignals", "ignore_stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag that a supervisor's loop polls.

    A flag, not an exception: a signal arriving while children are being started or
    stopped must not cut that work in half. SIGHUP is a closed terminal: it stops as
    cleanly as Ctrl-C, instead of killing the supervisor and orphaning its children.
    """

    def __init__(self) -> None:
        self.requested = False
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._request)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def ignore_stop_signals() -> None:
    """For a program that has stopped and is only exiting: a supervisor's second SIGTERM,
    or a second Ctrl-C, must not turn its clean stop (exit 0) into death by signal."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
