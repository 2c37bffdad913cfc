"""Owned tasks end when stopped, even when one of them loses a cancellation."""

from __future__ import annotations

import asyncio

from shared.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_still_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        # What a lost cancellation looks like from outside: the task carries on waiting.
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait([task], recheck_s=0.01)
    assert task.cancelled()
    assert swallowed == 2


async def test_finished_tasks_are_left_alone() -> None:
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await cancel_and_wait([task])
    assert task.result() == 1
