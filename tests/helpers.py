"""Helpers for every test: one way to wait from plain code, one from a coroutine, and the
log lines a test captured. Fixtures live in conftest.py; tests import helpers from here."""

from __future__ import annotations

import asyncio
import inspect
import io
import time
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["LogLines", "eventually", "wait_for"]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true, and return that; for plain code
    (child processes, sync clients). TimeoutError names `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


async def eventually(
    predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition"
) -> Any:
    """The same from a coroutine, without blocking the loop (servers of the test run on it);
    `predicate` may return a value or an awaitable."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}") from None


class LogLines:
    """The JSON lines this process logged, parsed (the `logs` fixture)."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self._buffer = buffer

    def all(self) -> list[dict[str, Any]]:
        lines = self._buffer.getvalue().splitlines()
        return [msgspec.json.decode(line) for line in lines if line.strip()]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.all() if line.get("event") == event]
