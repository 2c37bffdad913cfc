"""Slow and oversized clients against the receiver's real server settings (make_runner)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_body
from tests.receiver.helpers import live_receiver

PATH = "/realTimeTranscriptionEvents"


async def _exchange(url: str, request: bytes, *, then_wait_s: float = 5.0) -> bytes:
    """Send raw bytes, then read whatever comes back until the server closes (bounded)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(then_wait_s):
            return await reader.read()
    finally:
        writer.close()


async def test_oversized_header_is_refused_and_nothing_stored(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    async with live_receiver(make_settings(max_header_size=1024)) as receiver:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Padding: {'a' * 2000}\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        answer = await _exchange(receiver.url, head.encode())
    # aiohttp's parser answers the line it could not read with a 400.
    assert answer.split(b" ")[1] == b"400"
    assert await redis.xlen(Keys(prefix).events()) == 0


async def test_body_that_never_finishes_is_408(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    body = sample_body("stopped")
    async with live_receiver(make_settings(read_timeout="300ms")) as receiver:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        answer = await _exchange(receiver.url, head.encode() + body[:20])
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert await redis.xlen(Keys(prefix).events()) == 0


async def test_request_head_that_trickles_in_is_cut_off(
    make_settings: Callable[..., Settings],
) -> None:
    async with live_receiver(make_settings(read_timeout="300ms")) as receiver:
        # Never completes its head: the server closes the connection without an answer.
        answer = await _exchange(receiver.url, f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
    assert answer == b""
