"""The event loop the long-running programs run on: uvloop where it is installed, and
the garbage collector settled for a long run.

Measured with `python -m bench receiver`, uvloop is what lets a receiver approach a bare
aiohttp handler: most of a request's cost is the loop's own (wake-ups, transports).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from shared.signals import ignore_stop_signals

__all__ = ["YOUNG_COLLECTION_EVERY", "loop_name", "run", "settle_collector"]

T = TypeVar("T")

# Allocations between two collections of the youngest generation (CPython's default: 700).
# A worker's batch keeps its entries, events and alerts alive until it is acknowledged, so
# at 700 each collection went through the same objects again: 20-25 % of the alerts
# consumer's time in `python -m bench alerts` (7-10 µs an event of the mix, 2.6-3.6 at
# 10,000; `--collector interleaved`).
YOUNG_COLLECTION_EVERY: Final = 10_000


def run(main: Coroutine[Any, Any, T], *, program_ends: bool = True) -> T:
    """`asyncio.run`, on uvloop when it can be imported (it is a dependency off Windows).
    `program_ends`: nothing follows but the process's exit, so stop signals are ignored
    once the loop is done; a caller that goes on (a bench running the next) says False."""
    settle_collector()
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    finally:
        # The loop's signal handlers went with it.
        if program_ends:
            ignore_stop_signals()


def loop_name() -> str:
    """`uvloop` or `asyncio`: what the running loop is, for the start-up log line."""
    return (
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    )


def settle_collector() -> None:
    """What is loaded by now lives as long as the program: out of the collector's passes
    (`gc.freeze`, after a last collection), which then go through what runs, not through
    every module's functions and classes."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)
