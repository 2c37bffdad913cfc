"""The consumers in examples/ do what their docstrings say, against real servers: Valkey,
and a local HTTP server standing in for Bandwidth's transcription API."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web
from redis.asyncio import Redis

from examples.minutes import minutes, totals_key
from examples.transcripts import TranscriptFetcher, basic_auth, transcript_key
from shared.events import Available
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import group_info, running
from worker.consumers import consumer
from worker.dlq import read_all


async def _settled(redis: Redis, settings: Settings, group: str, count: int) -> bool:
    info = await group_info(redis, Keys(settings.key_prefix).events(), group)
    return bool(info) and info["pending"] == 0 and info["entries-read"] == count


def _stopped(account: str, transcription_id: str, duration: str) -> dict[str, Any]:
    event = sample_event("stopped", transcription_id=transcription_id, accountId=account)
    event["realTimeTranscription"]["duration"] = duration
    return event


async def test_minutes_adds_up_per_account_and_counts_a_redelivery_once(
    settings: Settings, redis: Redis, logs: LogLines
) -> None:
    async with running(settings, redis, [minutes]):
        await add_events(redis, settings, msgspec.json.encode(_stopped("111", "t-a", "PT1M30S")))
        await add_events(redis, settings, msgspec.json.encode(_stopped("111", "t-b", "PT3M")))
        await add_events(redis, settings, msgspec.json.encode(_stopped("222", "t-c", "PT45S")))
        # The same Stopped event again, as after a worker died before acknowledging it.
        await add_events(redis, settings, msgspec.json.encode(_stopped("111", "t-b", "PT3M")))
        await add_events(
            redis, settings, msgspec.json.encode(sample_event("started", accountId="111"))
        )
        await eventually(lambda: _settled(redis, settings, "minutes", 5))
    totals = await redis.hgetall(totals_key(settings.key_prefix))
    assert {k.decode(): float(v) for k, v in totals.items()} == {"111": 4.5, "222": 0.75}
    assert len(logs.named("minutes_already_counted")) == 1


class _Bandwidth:
    """Answers GET .../transcriptions/{id} with 404 `not_ready` times, then the text."""

    def __init__(self, not_ready: int) -> None:
        self.not_ready = not_ready
        self.requests: Counter[str] = Counter()
        self.auth: list[str] = []

    async def transcription(self, request: web.Request) -> web.Response:
        tid = request.match_info["tid"]
        self.requests[tid] += 1
        self.auth.append(request.headers.get("Authorization", ""))
        if self.requests[tid] <= self.not_ready:
            return web.json_response({"message": "not found"}, status=404)
        return web.json_response(
            {
                "accountId": "55555555",
                "callId": request.match_info["call"],
                "transcriptionId": tid,
                "tracks": [
                    {
                        "detectedLanguage": "en-US",
                        "track": "inbound",
                        "transcript": "hello, I need help",
                        "confidence": 0.93,
                    },
                    {
                        "detectedLanguage": "en-US",
                        "track": "outbound",
                        "transcript": "how can I help",
                        "confidence": 0.9,
                    },
                ],
            }
        )


@pytest.fixture
async def bandwidth() -> AsyncIterator[Callable[[int], Any]]:
    runners: list[web.AppRunner] = []

    async def start(not_ready: int) -> tuple[_Bandwidth, str]:
        fake = _Bandwidth(not_ready)
        app = web.Application()
        app.router.add_get(
            "/api/v2/accounts/{acct}/calls/{call}/transcriptions/{tid}", fake.transcription
        )
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return fake, f"http://127.0.0.1:{port}/api/v2"

    yield start
    for runner in runners:
        await runner.cleanup()


def _available(base: str, transcription_id: str) -> dict[str, Any]:
    event = sample_event("available", transcription_id=transcription_id, call_id="c-7")
    event["realTimeTranscription"]["url"] = (
        f"{base}/accounts/55555555/calls/c-7/transcriptions/{transcription_id}"
    )
    return event


async def test_transcripts_waits_out_the_first_404s_then_stores_the_text(
    settings: Settings, redis: Redis, bandwidth: Callable[[int], Any], logs: LogLines
) -> None:
    fake, base = await bandwidth(2)
    fetcher = TranscriptFetcher(
        authorization=basic_auth("api-user", "s3cret"), not_ready_delays_s=(0.01,) * 3
    )
    transcripts = consumer("transcripts", events=[Available])(fetcher)
    async with running(settings, redis, [transcripts]):
        await add_events(redis, settings, msgspec.json.encode(_available(base, "t-42")))
        await eventually(lambda: _settled(redis, settings, "transcripts", 1))
    stored = msgspec.json.decode(await redis.get(transcript_key(settings.key_prefix, "t-42")))
    assert [t["transcript"] for t in stored["tracks"]] == ["hello, I need help", "how can I help"]
    assert fake.requests == {"t-42": 3}  # two 404s, then the text, in one delivery
    expected = "Basic " + base64.b64encode(b"api-user:s3cret").decode()
    assert set(fake.auth) == {expected}
    [line] = logs.named("transcript_stored")
    assert line["tracks"] == ["inbound", "outbound"]


async def test_a_transcript_never_ready_is_retried_later_then_dead_lettered(
    make_settings: Callable[..., Settings], redis: Redis, bandwidth: Callable[[int], Any]
) -> None:
    settings = make_settings(max_deliveries=2, retry_base="20ms")
    fake, base = await bandwidth(1000)
    transcripts = consumer("transcripts", events=[Available])(
        TranscriptFetcher(not_ready_delays_s=(0.01,))
    )
    async with running(settings, redis, [transcripts]):
        await add_events(redis, settings, msgspec.json.encode(_available(base, "t-never")))
        [letter] = await eventually(lambda: read_all(redis, Keys(settings.key_prefix).dlq))
    assert "TranscriptNotReady" in letter.error
    assert letter.attempts == 2
    assert fake.requests == {"t-never": 4}  # two deliveries of two tries each
