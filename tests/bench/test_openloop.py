"""The open-loop client against a real aiohttp server: every request answered, each
answer matched to its own request, whatever the order of statuses and body lengths."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from bench._openloop import post_at_rate
from shared.embedded import free_port


@pytest.fixture
def server() -> Iterator[int]:
    """A server answering `204` to an even-numbered body, `400` with a body to an odd one,
    a little later, so that answers arrive pipelined and interleaved."""

    async def handle(request: web.Request) -> web.Response:
        n = int(await request.read())
        if n % 2:
            await asyncio.sleep(0.002)
            return web.Response(status=400, text=f"bad {n}" * (n % 7))
        return web.Response(status=204)

    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/events", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())
    thread = threading.Thread(target=lambda: (ready.set(), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_every_request_gets_its_own_answer(server: int) -> None:
    bodies = [str(n).encode() for n in range(400)]
    posted = post_at_rate("127.0.0.1", server, "/events", bodies, 4000, connections=3)
    assert posted.statuses == [400 if n % 2 else 204 for n in range(400)]
    assert all(0 < s <= a for s, a in zip(posted.sent_at, posted.answered_at, strict=True))
    assert posted.sent_at == sorted(posted.sent_at)  # in order, each at its time
