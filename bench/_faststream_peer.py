"""The FastStream peer of `python -m bench worker`: its Redis Streams subscriber in a group.

Imported only when FastStream is installed (`pip install -e '.[bench]'`): importing this
module raises ImportError otherwise. No postponed annotations here: FastStream reads the
handler's annotations at run time to inject the message.
"""

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisStreamMessage, StreamSub

from shared.events import decode_event

__all__ = ["drain"]


def _logger() -> logging.Logger:
    """Warnings and errors to stderr, as the runtime's logs are kept at warning here: the
    per-message lines (info) are made and filtered, not printed."""
    logger = logging.getLogger("bench.faststream")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


async def drain(
    url: str, stream: str, group: str, count: int, batch: int, acked: Callable[[], Awaitable[None]]
) -> int:
    """Run one FastStream subscriber until it has handled `count` entries of `group` and
    `acked()` returns (the last acknowledgement follows the handler); then stop it.

    The group must exist (FastStream would create it at `$`, after the filled stream).
    Returns how many messages the handler saw.
    """
    broker = RedisBroker(url, logger=_logger())
    handled = 0
    all_handled = asyncio.Event()

    subscriber = broker.subscriber(
        stream=StreamSub(
            stream, group=group, consumer="faststream", max_records=batch, polling_interval=100
        ),
        ack_policy=AckPolicy.ACK,
    )

    @subscriber
    async def noop(msg: RedisStreamMessage) -> None:
        nonlocal handled
        decode_event(msg.raw_message["data"][b"body"])
        handled += 1
        if handled == count:
            all_handled.set()

    await broker.start()
    try:
        await asyncio.wait_for(all_handled.wait(), 600)
        await acked()
    finally:
        # FastStream 0.7's stop cancels the read without waiting, then closes the
        # connection: the read, still blocked, logs "Message fetch error" first. Stop the
        # subscriber and let its read end before the broker closes.
        reading = list(subscriber.tasks)
        await subscriber.stop()
        await asyncio.gather(*reading, return_exceptions=True)
        await broker.stop()
    return handled
