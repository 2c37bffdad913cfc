"""The event loop the long-running programs run on: uvloop where it is installed.

Measured with `python -m bench receiver`, uvloop is what lets a receiver approach a bare
aiohttp handler: most of a request's cost is the loop's own (wake-ups, transports).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when it can be imported (it is a dependency off Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    """`uvloop` or `asyncio`: what the running loop is, for the start-up log line."""
    return (
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    )
