"""The built-in alerts consumer logs one transcription_alert per failed transcription."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from shared.entries import StreamEntry
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import LogLines
from tests.fixtures import sample_body
from tests.worker.support import running
from worker.alerts import make_alerts_consumer


async def _add(redis: Redis, settings: Settings, body: bytes, event_type: str) -> None:
    entry = StreamEntry(event_type, body, 1, "req")
    await redis.xadd(Keys(settings.key_prefix).events(), entry.to_fields())


async def _wait_acked(redis: Redis, stream: str, group: str, count: int) -> None:
    async with asyncio.timeout(10):
        while True:
            groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
            group_info = groups.get(group.encode())
            if (
                group_info
                and group_info["pending"] == 0
                and (group_info.get("entries-read") or 0) >= count
            ):
                return
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    "event_type", ["realTimeTranscriptionStopped", "realTimeTranscriptionRejected"]
)
@pytest.mark.parametrize("cause", ["connection-error", "error"])
async def test_alerting_cause_logs_exactly_one_alert(
    settings: Settings, redis: Redis, logs: LogLines, event_type: str, cause: str
) -> None:
    body = sample_body(event_type, cause=cause, call_id="c-42", transcription_id="t-42")
    async with running(settings, redis, [make_alerts_consumer(settings)]):
        await _add(redis, settings, body, event_type)
        await _wait_acked(redis, Keys(settings.key_prefix).events(), "alerts", 1)
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
    async with running(settings, redis, [make_alerts_consumer(settings)]):
        await _add(redis, settings, sample_body(event_type, cause=cause), event_type)
        await _wait_acked(redis, Keys(settings.key_prefix).events(), "alerts", 1)
    assert logs.named("transcription_alert") == []


async def test_duration_is_reported_in_seconds(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings()
    body = sample_body(
        "stopped", cause="error",
        realTimeTranscription={"id": "t-1", "name": "n", "duration": "PT1M52.217257456S"},
    )  # fmt: skip
    async with running(settings, redis, [make_alerts_consumer(settings)]):
        await _add(redis, settings, body, "realTimeTranscriptionStopped")
        await _wait_acked(redis, Keys(settings.key_prefix).events(), "alerts", 1)
    [alert] = logs.named("transcription_alert")
    assert alert["duration_s"] == pytest.approx(112.217257)
