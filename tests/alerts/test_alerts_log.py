"""The built-in alerts consumer logs one transcription_alert per failed transcription."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from redis.asyncio import Redis

from shared.logs import configure_logging
from shared.settings import Settings
from tests.alerts.helpers import alerts_consumer, wait_handled
from tests.bodies import sample_body
from tests.helpers import LogLines, SeparateWrites, add_events
from tests.worker.helpers import running


@pytest.mark.parametrize(
    "event_type", ["realTimeTranscriptionStopped", "realTimeTranscriptionRejected"]
)
@pytest.mark.parametrize("cause", ["connection-error", "error"])
async def test_alerting_cause_logs_exactly_one_alert(
    settings: Settings, redis: Redis, logs: LogLines, event_type: str, cause: str
) -> None:
    body = sample_body(event_type, cause=cause, call_id="c-42", transcription_id="t-42")
    async with running(settings, redis, [alerts_consumer(settings)]):
        await add_events(redis, settings, body)
        await wait_handled(redis, settings, 1)
    [alert] = logs.named("transcription_alert")
    assert alert["level"] == "error"
    assert alert["cause"] == cause
    assert alert["event_type"] == event_type
    assert alert["call_id"] == "c-42"
    assert alert["transcription_id"] == "t-42"
    assert alert["transcription_name"] == "live_audience"
    assert alert["destination"] == "wss://transcripts.example.com/live"
    assert alert["account_id"] == "55555555"
    assert alert["application_id"] == "7fc9698a-b04a-468b-9e8f-91238c0d0086"
    assert "error_message" in alert
    assert "duration_s" in alert
    assert alert["component"] == "test"
    assert alert["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("event_type", "cause"),
    [
        ("realTimeTranscriptionStopped", "closed"),
        ("realTimeTranscriptionStarted", None),
        ("realTimeTranscriptionAvailable", None),
    ],
)
async def test_no_alert_without_failure(
    settings: Settings, redis: Redis, logs: LogLines, event_type: str, cause: str | None
) -> None:
    async with running(settings, redis, [alerts_consumer(settings)]):
        await add_events(redis, settings, sample_body(event_type, cause=cause))
        await wait_handled(redis, settings, 1)
    assert logs.named("transcription_alert") == []


async def test_duration_is_reported_in_seconds(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings()
    body = sample_body(
        "stopped",
        cause="error",
        realTimeTranscription={"id": "t-1", "name": "n", "duration": "PT1M52.217257456S"},
    )
    async with running(settings, redis, [alerts_consumer(settings)]):
        await add_events(redis, settings, body)
        await wait_handled(redis, settings, 1)
    [alert] = logs.named("transcription_alert")
    assert alert["duration_s"] == pytest.approx(112.217257)


async def test_a_batchs_alert_lines_reach_the_log_in_one_write(
    settings: Settings, redis: Redis
) -> None:
    """A write (a syscall on a real stdout) per batch of alerts, not per alert line."""
    out = SeparateWrites()
    configure_logging(component="test", level="info", fmt="json", stream=out, cache=False)
    bodies = [
        sample_body("stopped", cause="error", call_id=f"c-{n}", transcription_id=f"t-{n}")
        for n in range(20)
    ]
    await add_events(redis, settings, *bodies)
    async with running(settings, redis, [alerts_consumer(settings)]):
        await wait_handled(redis, settings, 20)
    alert_writes = [w for w in out.writes if b'"transcription_alert"' in w]
    lines = [msgspec.json.decode(line) for w in alert_writes for line in w.splitlines()]
    assert sorted(line["call_id"] for line in lines if line["event"] == "transcription_alert") == (
        sorted(f"c-{n}" for n in range(20))
    )
    assert all(w.endswith(b"\n") for w in out.writes)
    assert len(alert_writes) == 1
