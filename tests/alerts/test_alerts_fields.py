"""An alert goes out whatever its fields hold: odd destinations, control bytes, huge texts.

The bodies are written at byte level, as Bandwidth (or anything claiming to be it) might
send them; each must reach every sink once and never the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, settled, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.helpers import LogLines, add_events, eventually


def _failed_stop(destination: bytes, error_message: bytes = b'"boom"') -> bytes:
    """A failed Stopped whose destination and error message are the raw JSON given."""
    return (
        b'{"eventType":"realTimeTranscriptionStopped","eventTime":"2026-01-02T03:04:05.678Z",'
        b'"accountId":"55555555","applicationId":"7fc9698a-b04a-468b-9e8f-91238c0d0086",'
        b'"callId":"c-1","from":"+15551112222","to":"+15553334444","direction":"inbound",'
        b'"cause":"error","errorMessage":' + error_message + b","
        b'"realTimeTranscription":{"id":"t-1","name":"live","tracks":["inbound"],'
        b'"destination":' + destination + b"}}"
    )


DESTINATIONS = {
    "unclosed IPv6 bracket": b'"wss://[asr.example.com/live"',
    "stray closing bracket": b'"wss://asr.example.com]/live"',
    "bare IPv6 without its bracket": b'"wss://[::1"',
    "port out of range": b'"wss://asr.example.com:99999999/live"',
    "no scheme": b'"asr.example.com/live"',
    "empty": b'""',
    "control bytes": b'"wss://\\u0000\\u001b[31m/\\t"',
    "non-ASCII host": b'"wss://\xc3\xbc\xc3\xa9.example/\xe2\x80\xae"',
    "100k characters": b'"wss://' + b"a" * 100_000 + b'/"',
}
MESSAGES = {
    "100k characters": b'"' + b"x" * 100_000 + b'"',
    "markup": b'"<!channel> *bold* `code` &amp; <http://x|y>"',
    "null": b"null",
}


@pytest.mark.parametrize(
    ("destination", "message"),
    [(d, b'"boom"') for d in DESTINATIONS.values()]
    + [(DESTINATIONS["empty"], m) for m in MESSAGES.values()],
    ids=[*DESTINATIONS, *(f"message {name}" for name in MESSAGES)],
)
async def test_an_alert_goes_out_whatever_its_fields_hold(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
    destination: bytes,
    message: bytes,
) -> None:
    settings = make_settings(
        **sink_settings(sink_servers),
        max_deliveries="2",
        retry_base="50ms",
        alert_group_interval="200ms",
    )
    async with running_workers(settings, redis):
        await add_events(redis, settings, _failed_stop(destination, message))
        await wait_handled(redis, settings, 1)
        await eventually(lambda: settled(redis, settings), what="delivered")
    assert await redis.xlen(Keys(settings.key_prefix).dlq) == 0
    for name, server in sink_servers.items():
        assert len(server.accepted) == 1, name
        assert len(server.received) == 1, name
    [alert] = sink_servers["webhook"].accepted
    assert alert["call_id"] == "c-1"
    assert len(logs.named("transcription_alert")) == 1
    assert logs.named("handler_failed") == []
