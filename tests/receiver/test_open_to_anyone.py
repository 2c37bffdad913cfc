"""A receiver that anyone may post to says so: a warning at start and a gauge on /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from receiver.auth import open_to_anyone
from shared.embedded import free_port
from shared.settings import Settings
from tests.helpers import LogLines
from tests.receiver.helpers import serve_until_logged

GAUGE = "rtt_receiver_open_to_anyone"


@pytest.mark.parametrize(
    ("host", "basic_auth", "allow_cidrs", "is_open"),
    [
        ("0.0.0.0", [], [], True),
        ("::", [], [], True),
        ("10.1.2.3", [], [], True),
        ("receiver.internal", [], [], True),
        ("0.0.0.0", ["bw:pw"], [], False),
        ("0.0.0.0", [], ["10.0.0.0/8"], False),
        ("127.0.0.1", [], [], False),
        ("::1", [], [], False),
        ("localhost", [], [], False),
    ],
)
def test_open_to_anyone(
    host: str, basic_auth: list[str], allow_cidrs: list[str], is_open: bool
) -> None:
    assert open_to_anyone(host, basic_auth, allow_cidrs) is is_open


def _gauge(text: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(GAUGE + " ")]
    return float(line.split()[-1])


@pytest.mark.parametrize(
    ("overrides", "value"),
    [
        ({"host": "0.0.0.0"}, 1.0),
        ({"host": "0.0.0.0", "basic_auth": "bw:pw"}, 0.0),
        ({"host": "0.0.0.0", "allow_cidrs": "10.0.0.0/8"}, 0.0),
        ({"host": "127.0.0.1"}, 0.0),
    ],
)
async def test_metrics_gauge(start_receiver: Any, overrides: dict[str, str], value: float) -> None:
    client = await start_receiver(**overrides)
    resp = await client.get("/metrics")
    assert _gauge(await resp.text()) == value


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
async def test_warning_line_at_start(
    make_settings: Callable[..., Settings], logs: LogLines, host: str, warned: bool
) -> None:
    settings = make_settings(host=host, port=str(free_port()))
    # The warning is logged in the same step as the listening line, before any await.
    await serve_until_logged(settings, logs, "receiver_listening")
    lines = logs.named("receiver_open_to_anyone")
    assert bool(lines) is warned
    if warned:
        [line] = lines
        assert line["level"] == "warning"
        assert "RTT_BASIC_AUTH" in line["note"]
        assert "RTT_ALLOW_CIDRS" in line["note"]
