"""Stopping owned background tasks for sure.

On Python 3.11 a cancellation can be lost: `asyncio.wait_for` (which redis-py uses around
every socket write when a socket timeout is set) swallows it when the awaited operation
completes in the same loop turn (CPython gh-86296). A task that lost its cancellation
runs on, so it is cancelled again until it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, recheck_s: float = 0.5) -> None:
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recheck_s)
