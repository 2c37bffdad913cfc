from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.alerts.sinkserver import SinkServer


@pytest.fixture
async def sink_servers() -> AsyncIterator[dict[str, SinkServer]]:
    """Three real HTTP servers: `webhook`, `slack` and `pagerduty` (which answers 202)."""
    servers = {
        "webhook": SinkServer(),
        "slack": SinkServer(),
        "pagerduty": SinkServer(default_status=202),
    }
    for server in servers.values():
        await server.start()
    yield servers
    for server in servers.values():
        await server.stop()
