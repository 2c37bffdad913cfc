"""Open-loop HTTP/1.1 load that stays light: each request leaves at its scheduled time,
whether or not earlier ones were answered, on a few keep-alive connections.

wrk keeps a number of connections busy (closed loop) and cannot stamp each request; an
aiohttp client costs about 170 µs of CPU a request, so at 5,000 requests a second it
needs a core of its own and becomes what is measured. Here a request is bytes built
before the run, written on a connection with nothing in flight (or, when every one is
busy, pipelined on the next in turn), and its answer is matched by order, as HTTP/1.1
answers in order on a connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Sequence
from typing import cast

import msgspec
import uvloop

__all__ = ["Posted", "post_at_rate"]

_ANSWERS_WITHIN_S = 60.0  # waited after the last request; what is unanswered then stays 0


class Posted(msgspec.Struct, frozen=True):
    sent_at: list[float]  # time.time() each request was written
    answered_at: list[float]  # ... and its answer read in full (0.0: never answered)
    statuses: list[int]  # 0: never answered


class _Run:
    """What the connections share: the results, who is idle, and when all is answered."""

    def __init__(self, count: int) -> None:
        self.posted = Posted([0.0] * count, [0.0] * count, [0] * count)
        self.idle: collections.deque[_Connection] = collections.deque()
        self.settled = asyncio.Event()  # set when a connection goes idle or is lost


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `waiting` holds its requests in flight, oldest first."""

    def __init__(self, run: _Run) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[int] = collections.deque()
        self.lost = False
        self._run = run
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            start = head.find(b"\r\ncontent-length:")
            length = 0 if start < 0 else int(head[start + 17 :].split(b"\r\n", 1)[0])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            n = self.waiting.popleft()
            run = self._run
            run.posted.answered_at[n] = time.time()
            run.posted.statuses[n] = int(head[9:12])
            if not self.waiting:
                run.idle.append(self)
                run.settled.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._run.settled.set()


async def _post(
    host: str, port: int, requests: Sequence[bytes], rate: float, connections: int
) -> Posted:
    loop = asyncio.get_running_loop()
    run = _Run(len(requests))
    posted, idle = run.posted, run.idle
    conns = []
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Connection(run), host, port)
        conns.append(conn)
    idle.extend(conns)
    turn = 0
    start = loop.time() + 0.05
    for n, request in enumerate(requests):
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            conn = idle.popleft()
        else:  # every connection busy: pipeline on the next in turn
            conn = conns[turn % connections]
            turn += 1
        conn.waiting.append(n)
        posted.sent_at[n] = time.time()
        assert conn.transport is not None
        conn.transport.write(request)
    # Until every request is answered but those of lost connections; a minute at most.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_ANSWERS_WITHIN_S):
            while any(c.waiting and not c.lost for c in conns):
                run.settled.clear()
                await run.settled.wait()
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return posted


def post_at_rate(
    url_host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    rate: float,
    *,
    connections: int = 64,
) -> Posted:
    """POST bodies[n] at n / rate seconds from the start, on uvloop."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url_host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    requests = [b"%s%d\r\n\r\n%s" % (head, len(body), body) for body in bodies]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_post(url_host, port, requests, rate, connections))
