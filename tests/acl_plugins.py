"""A consumer for the ACL tests that fails every delivery, so entries reach the DLQ.

It touches no key of its own: the worker's ACL user is the documented one, unchanged.
"""

from __future__ import annotations

from shared.events import Event
from worker import Context, consumer


@consumer("always_fails")
async def always_fails(event: Event, ctx: Context) -> None:
    raise RuntimeError("this consumer fails on purpose")
