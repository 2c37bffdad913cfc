from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from receiver.app import create_app
from receiver.server import ReceiverRunner
from shared.settings import Settings
from tests.receiver.helpers import ReceiverFactory


class _ReceiverTestServer(TestServer):
    """aiohttp's test server with the receiver's own runner, as `rtt receiver` serves."""

    async def _make_runner(self, **kwargs: Any) -> ReceiverRunner:
        return ReceiverRunner(self.app, **kwargs)


@pytest.fixture
async def start_receiver(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[ReceiverFactory]:
    """Start the receiver app on a real loopback port; returns an HTTP client to it."""
    clients: list[TestClient[Any, Any]] = []

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        settings = make_settings(**overrides)
        client = TestClient(_ReceiverTestServer(create_app(settings, redis)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def receiver(start_receiver: ReceiverFactory) -> TestClient[Any, Any]:
    return await start_receiver()
