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


def sink_settings(servers: dict[str, SinkServer]) -> dict[str, str]:
    """Settings overrides pointing every sink at its stand-in."""
    return {
        "alert_webhook_url": servers["webhook"].url,
        "alert_slack_webhook_url": servers["slack"].url,
        "alert_pagerduty_routing_key": "R0UTINGKEY0123456789012345678901",
        "alert_pagerduty_url": servers["pagerduty"].url,
    }
