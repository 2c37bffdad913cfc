"""Real local HTTP servers standing in for a webhook endpoint, Slack and PagerDuty."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

__all__ = ["Received", "SinkServer"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the server answered
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class SinkServer:
    """Records every request; answers from a script of statuses, then `default_status`."""

    default_status: int = 200
    delay_s: float = 0.0  # how long the server thinks before answering (after recording)
    refuse_once: bool = False  # answer 503 to the first request of each Idempotency-Key
    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    def answer(self, *responses: int | tuple[int, dict[str, str]]) -> None:
        """Answer the next requests with these statuses (optionally with headers)."""
        for response in responses:
            self.script.append(response if isinstance(response, tuple) else (response, {}))

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, headers = self.script.popleft() if self.script else (self.default_status, {})
        key = request.headers.get("Idempotency-Key")
        if self.refuse_once and key not in {
            r.headers.get("Idempotency-Key") for r in self.received
        }:
            status = 503
        self.received.append(
            Received(request.path, dict(request.headers), body, status, time.monotonic())
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = "ok" if status < 300 else f"error {status}"
        return web.Response(status=status, text=text, headers=headers)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def accepted(self) -> list[Any]:
        """Bodies (decoded) of the requests answered with a 2xx: the deliveries."""
        return [r.json() for r in self.received if 200 <= r.status < 300]

    def accepted_per_key(self) -> Counter[str]:
        """How often each `Idempotency-Key` was taken (2xx): a folding receiver keeps one."""
        return Counter(
            r.headers.get("Idempotency-Key", "") for r in self.received if 200 <= r.status < 300
        )
