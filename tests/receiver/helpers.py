"""A live receiver on a loopback port, and clients that post to it as Bandwidth would."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from receiver.app import create_app
from receiver.server import make_runner, serve
from shared.connections import create_redis
from shared.keys import Keys
from shared.settings import Settings
from tests.helpers import LogLines, eventually

__all__ = [
    "LiveReceiver",
    "Posted",
    "RawAnswer",
    "ReceiverFactory",
    "live_receiver",
    "metric",
    "post_all",
    "raw_post",
    "serve_until_logged",
    "stream_call_ids",
]

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}
# Bandwidth waits this long for an answer before it gives up on a delivery.
BANDWIDTH_TIMEOUT_S = 15
# What the `start_receiver` fixture gives: start the app with these overrides, get a client.
ReceiverFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@dataclass
class LiveReceiver:
    url: str
    settings: Settings
    app: web.Application

    @property
    def events_url(self) -> str:
        return self.url + self.settings.path


@asynccontextmanager
async def live_receiver(settings: Settings) -> AsyncIterator[LiveReceiver]:
    """The real app on a real port, with its own Redis client, stopped as SIGTERM would."""
    redis = create_redis(settings)
    app = create_app(settings, redis)
    runner = make_runner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield LiveReceiver(f"http://127.0.0.1:{port}", settings, app)
    finally:
        await runner.cleanup()
        await redis.aclose()


@dataclass
class Posted:
    statuses: dict[bytes, int] = field(default_factory=dict)

    def count(self) -> Counter[int]:
        return Counter(self.statuses.values())

    def with_status(self, status: int) -> list[bytes]:
        return [body for body, code in self.statuses.items() if code == status]


async def post_all(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int = 8,
    posted: Posted | None = None,
    headers: dict[str, str] | None = None,
    stop: asyncio.Event | None = None,
) -> Posted:
    """Post each body once, `concurrency` at a time, until all are sent or `stop` is set.

    A timeout or a reset connection counts as status 0.
    """
    posted = posted or Posted()
    queue = iter(bodies)
    timeout = aiohttp.ClientTimeout(total=BANDWIDTH_TIMEOUT_S)

    async def client(session: aiohttp.ClientSession) -> None:
        for body in queue:
            if stop is not None and stop.is_set():
                return
            try:
                async with session.post(url, data=body, headers=headers or JSON) as resp:
                    await resp.read()
                    posted.statuses[body] = resp.status
            except (aiohttp.ClientError, TimeoutError):
                posted.statuses[body] = 0

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return posted


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def raw_post(
    url: str, body: bytes, headers: Sequence[tuple[bytes, bytes]] = (), *, timeout_s: float = 15
) -> RawAnswer:
    """POST exactly these header bytes (any byte a client may send) on a fresh connection.

    `Content-Length` is added unless given; the connection is closed after the answer.
    Status 0: the server closed the connection without an answer.
    """
    target = url.removeprefix("http://")
    address, _, path = target.partition("/")
    host, port = address.split(":")
    lines = [b"POST /" + path.encode() + b" HTTP/1.1", b"Host: " + address.encode()]
    lines += [name + b": " + value for name, value in headers]
    if not any(name.lower() == b"content-length" for name, _ in headers):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    if not status_line.startswith(b"HTTP/"):
        return RawAnswer(0, {}, answer)
    found: dict[bytes, bytes] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        found[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split(b" ")[1]), found, rest)


async def stream_call_ids(redis: Redis, keys: Keys) -> Counter[str]:
    """How many times each call id is on the event streams."""
    found: Counter[str] = Counter()
    for stream in keys.event_streams():
        for _, fields in await redis.xrange(stream):
            found[msgspec.json.decode(fields[b"body"])["callId"]] += 1
    return found


async def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, as /metrics shows them."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", re.M)
    return sum(
        float(value) for found, value in pattern.findall(text) if wanted <= set(found.split(","))
    )


async def serve_until_logged(settings: Settings, logs: LogLines, event: str) -> None:
    """The receiver's `serve` until it logs `event`, then cancelled: for what it says as it
    starts (each such line is logged in the step that logs it, before any await)."""
    task = asyncio.create_task(serve(settings))
    try:
        await eventually(lambda: asyncio.sleep(0, logs.named(event)), what=event)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
