"""The receiver and the worker run on uvloop where it is installed."""

from __future__ import annotations

import asyncio

from shared.loop import loop_name, run


def test_run_uses_uvloop() -> None:
    async def which() -> tuple[str, str]:
        return loop_name(), type(asyncio.get_running_loop()).__module__

    name, module = run(which())
    assert name == "uvloop"
    assert module.startswith("uvloop")


async def test_the_default_loop_is_named_asyncio() -> None:
    assert loop_name() == "asyncio"
