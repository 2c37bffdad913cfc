"""One POST to an alert sink: a deadline per call, quick retries with backoff, and `429`.

A `429` pauses the sink for every worker (the pause is kept in Redis) for as long as its
`Retry-After` says; a sink may also be paced (Slack takes about one message a second per
channel). A poster either waits out any pause (the outbox's: it delivers in the
background) or at most `MAX_WAIT_S` (a handler's): past that it raises `SinkPaused`, and
the alert is handed to the outbox, delayed rather than failed. What still fails after
the quick retries raises, and the caller decides: the entry goes back to the runtime's
retries, or the outbox tries again later.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Mapping
from typing import Final

import aiohttp
from redis.asyncio import Redis

from shared.keys import Keys
from worker.retry import backoff_s as backoff_delay_s

from .clock import NOW_MS

__all__ = [
    "MAX_WAIT_S",
    "Poster",
    "SinkError",
    "SinkPaused",
    "SinkRejected",
    "SinkThrottled",
    "SinkUnavailable",
]

# The longest a handler's delivery waits for a pause or pacing slot; past it, the alert
# goes to the outbox instead of holding a handler (and spending its retries) in the pause.
MAX_WAIT_S: Final = 10.0
# "No limit" for the pacing script, in ms: the outbox waits out any pause.
_FOREVER_MS: Final = 10**15


class SinkError(Exception):
    """A sink did not take a notification."""


class SinkUnavailable(SinkError):
    """Timeout, connection failure, `5xx` or `408`: worth another try."""


class SinkThrottled(SinkUnavailable):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkPaused(SinkThrottled):
    """The sink is paused (or paced) further ahead than this poster waits."""


class SinkRejected(SinkError):
    """Another `4xx`: the same request would fail again now (bad URL, key or payload)."""


def parse_retry_after(value: str | None, default_s: float = 1.0) -> float:
    """`Retry-After` as delta-seconds or an HTTP date; the default when absent or garbled."""
    if not value:
        return default_s
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default_s
    return max(0.0, when.timestamp() - time.time())


# Reserve the next slot of a sink: returns how long to wait (ms) before calling it.
# KEYS[1] pace key; ARGV[1] interval ms (0: no pacing), ARGV[2] pause ms (a 429's
# Retry-After, 0 otherwise), ARGV[3] the longest wait the caller accepts: a slot further
# away is not reserved, so callers that give up do not push everyone else back. Uses the
# server's clock, which every worker shares.
_SLOT = (
    NOW_MS
    + """local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local pause = tonumber(ARGV[2])
if pause > 0 then
  local until_ms = math.max(nxt, now + pause)
  redis.call('SET', KEYS[1], until_ms, 'PX', (until_ms - now) + 60000)
  return 0
end
local start = math.max(now, nxt)
if start - now > tonumber(ARGV[3]) then return start - now end
if interval > 0 then
  redis.call('SET', KEYS[1], start + interval, 'PX', (start - now) + interval + 60000)
end
return start - now
"""
)


class Poster:
    """POSTs JSON for the sinks over one `aiohttp.ClientSession` owned by the alerts consumer.

    `max_wait_s` is the longest this poster waits for a sink's pause or pacing slot;
    `None` waits as long as the sink asks, however many `429`s that takes.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        redis: Redis,
        keys: Keys,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float = 0.2,
        max_wait_s: float | None = MAX_WAIT_S,
    ) -> None:
        self._session = session
        self._redis = redis
        self._keys = keys
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_wait_ms = _FOREVER_MS if max_wait_s is None else int(max_wait_s * 1000)
        self._slot = redis.register_script(_SLOT)

    @property
    def patient(self) -> bool:
        return self._max_wait_ms == _FOREVER_MS

    @property
    def budget_s(self) -> float:
        """An upper bound on one `post` of a poster that does not wait out long pauses."""
        total = self._timeout.total or 0.0
        return (self._retries + 1) * (total + MAX_WAIT_S)

    async def post(
        self,
        sink: str,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        interval_ms: int = 0,
    ) -> None:
        while True:
            try:
                await self._post_with_retries(sink, url, body, headers or {}, interval_ms)
                return
            except SinkThrottled:
                if not self.patient:
                    raise
                # Still throttled after the quick retries: the pause is recorded, and the
                # next round waits it out. A pause delays; it never fails a delivery.

    async def _post_with_retries(
        self, sink: str, url: str, body: bytes, headers: Mapping[str, str], interval_ms: int
    ) -> None:
        for attempt in range(1, self._retries + 2):
            try:
                await self._wait_for_slot(sink, interval_ms)
                await self._post_once(sink, url, body, headers)
                return
            except SinkPaused:
                raise  # paused longer than this poster waits: not retried here, handed on
            except SinkThrottled:
                if attempt > self._retries:
                    raise
                # No backoff: the pacing slot already waits out Retry-After, for every worker.
            except SinkUnavailable:
                if attempt > self._retries:
                    raise
                # Between backoff_s and twice it at first, doubling, at most MAX_WAIT_S / 2.
                await asyncio.sleep(backoff_delay_s(attempt, 2 * self._backoff_s, MAX_WAIT_S / 2))

    async def _wait_for_slot(self, sink: str, interval_ms: int) -> None:
        wait_ms = int(
            await self._slot(
                keys=[self._keys.alert_pace(sink)], args=[interval_ms, 0, self._max_wait_ms]
            )
        )
        if wait_ms > self._max_wait_ms:
            raise SinkPaused(f"{sink}: paused for {wait_ms / 1000:.1f}s", wait_ms / 1000)
        if wait_ms > 0:
            # One ms more: the event loop's timers count whole ms and may fire up to one
            # early; with the pause's own ms below, no call comes before its Retry-After.
            await asyncio.sleep((wait_ms + 1) / 1000)

    async def _post_once(
        self, sink: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        all_headers = {"Content-Type": "application/json", "User-Agent": "rtt-events", **headers}
        try:
            async with self._session.post(
                url, data=body, headers=all_headers, timeout=self._timeout
            ) as resp:
                text = (await resp.read())[:300].decode(errors="replace")
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkUnavailable(f"{sink}: {type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return
        message = f"{sink}: HTTP {status}: {text}"
        if status == 429:
            pause_s = parse_retry_after(retry_after)
            # Rounded up, and one ms more for the server clock's cut-off fraction of a ms.
            pause_ms = math.ceil(pause_s * 1000) + 1
            await self._slot(keys=[self._keys.alert_pace(sink)], args=[0, pause_ms, 0])
            raise SinkThrottled(message, pause_s)
        if status >= 500 or status == 408:
            raise SinkUnavailable(message)
        raise SinkRejected(message)
