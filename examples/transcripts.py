"""Fetch the transcript of each Available event from its `url`, and keep it in Redis.

    BW_API_USER=... BW_API_PASSWORD=... \\
        rtt worker --consumer examples.transcripts:transcripts

The Available event carries no text, only `url`, and the transcript is often not ready
when the event arrives: the first GETs answer 404 for a few seconds. So the handler
retries a 404 a few times on the spot; if it is still not there, it raises, and the
runtime retries the event later with backoff, then dead-letters it after
RTT_MAX_DELIVERIES. Other failures (401, 5xx, timeouts) raise at once.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence

import aiohttp
import msgspec

from shared.events import Available, Event
from worker import Context, SetupContext, consumer


class TrackTranscript(msgspec.Struct, rename="camel"):
    track: str
    transcript: str
    confidence: float | None = None
    detected_language: str | None = None


class CallTranscription(msgspec.Struct, rename="camel"):
    """Bandwidth's getRealTimeTranscription answer: the text per track."""

    transcription_id: str
    tracks: list[TrackTranscript] = []
    account_id: str | None = None
    call_id: str | None = None


class TranscriptNotReady(Exception):
    """Still 404 after the quick retries: the runtime retries the event later."""


def transcript_key(prefix: str, transcription_id: str) -> str:
    return f"{prefix}:transcript:{transcription_id}"


def basic_auth(user: str, password: str) -> str:
    """An `Authorization` header value for Bandwidth's API credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TranscriptFetcher:
    def __init__(
        self,
        *,
        authorization: str | None = None,
        not_ready_delays_s: Sequence[float] = (0.7, 1.2, 2.0, 3.0),
        timeout_s: float = 10.0,
        keep_s: int = 7 * 86_400,
    ) -> None:
        self.authorization = authorization
        self.delays_s = tuple(not_ready_delays_s)
        self.timeout_s = timeout_s
        self.keep_s = keep_s
        self.session: aiohttp.ClientSession | None = None
        self.decoder = msgspec.json.Decoder(CallTranscription)

    async def setup(self, ctx: SetupContext) -> None:
        if self.authorization is None and os.environ.get("BW_API_USER"):
            self.authorization = basic_auth(
                os.environ["BW_API_USER"], os.environ.get("BW_API_PASSWORD", "")
            )
        headers = {"Authorization": self.authorization} if self.authorization else {}
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=headers
        )

    async def teardown(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, event: Event, ctx: Context) -> None:
        info = event.transcription_info
        if info.status != "available" or not info.url:
            ctx.log.warning("transcript_unavailable", status=info.status)
            return
        assert self.session is not None, "setup() opens the session"
        for delay_s in (0.0, *self.delays_s):
            await asyncio.sleep(delay_s)
            async with self.session.get(info.url) as resp:
                if resp.status == 404:
                    continue
                resp.raise_for_status()
                body = await resp.read()
            result = self.decoder.decode(body)
            await ctx.redis.set(
                transcript_key(ctx.key_prefix, info.id),
                msgspec.json.encode(result),
                ex=self.keep_s,
            )
            ctx.log.info(
                "transcript_stored",
                tracks=[t.track for t in result.tracks],
                chars=sum(len(t.transcript) for t in result.tracks),
            )
            return
        raise TranscriptNotReady(f"{info.url}: 404 after {len(self.delays_s) + 1} tries")


transcripts = consumer("transcripts", events=[Available])(TranscriptFetcher())
