"""The rate rule: alert when too large a share of transcription stops failed, and on recovery.

Stops are kept in a sorted set by receive time over a sliding window, each stop once (a
redelivery does not count twice). One script records a stop, trims the window, counts,
and flips the firing state: the flip and the notification it owes go onto the outbox in
the same step, so N workers fire once per incident and resolve once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

from redis.asyncio import Redis

from shared.events import Stopped, event_identity
from shared.keys import Keys
from shared.settings import Settings

from .notifications import RateChange
from .pipelined import Call

__all__ = ["RateRule", "rate_change_from_outbox"]

# KEYS: stops, failed, state, outbox. ARGV: member ('' to only evaluate), at ms, failed
# flag, window ms, threshold, min stops. Returns {stops, failed, change}.
_EVALUATE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - tonumber(ARGV[4])
if ARGV[1] ~= '' and tonumber(ARGV[2]) > since then
  redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
  if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
local stops = redis.call('ZCARD', KEYS[1])
local failed = redis.call('ZCARD', KEYS[2])
local threshold = tonumber(ARGV[5])
local firing = redis.call('HGET', KEYS[3], 'firing') == '1'
local change = ''
if (not firing) and stops >= tonumber(ARGV[6]) and failed > threshold * stops then
  redis.call('HINCRBY', KEYS[3], 'incident', 1)
  redis.call('HSET', KEYS[3], 'firing', '1')
  change = 'firing'
elseif firing and failed <= threshold * stops then
  redis.call('HSET', KEYS[3], 'firing', '0')
  change = 'resolved'
end
if change ~= '' then
  redis.call('XADD', KEYS[4], '*', 'kind', 'rate', 'status', change,
             'incident', redis.call('HGET', KEYS[3], 'incident'),
             'failed', failed, 'stops', stops, 'at', now)
end
if stops > 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 60000)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 60000)
end
return {stops, failed, change}
"""


class RateRule:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._keys = keys
        self._redis = redis
        self._settings = settings
        self._window_ms = max(1, int(settings.alert_rate_window.total_seconds() * 1000))
        self._threshold = settings.alert_rate_threshold
        self._min_stops = settings.alert_rate_min_stops
        self._failing = frozenset(settings.alert_causes)
        self._script = redis.register_script(_EVALUATE)

    async def record(self, event: Stopped, at_ms: int) -> str:
        """Count one stop (failed or not) at its receive time; returns the change, if any."""
        failed = "1" if event.cause in self._failing else "0"
        return await self._run(event_identity(event), at_ms, failed)

    def record_call(self, event: Stopped, at_ms: int) -> Call:
        """What `record` runs, to run in a batch."""
        failed = "1" if event.cause in self._failing else "0"
        return Call(
            self._script, self._script_keys(), self._args(event_identity(event), at_ms, failed)
        )

    def _script_keys(self) -> list[str]:
        keys = self._keys
        return [keys.rate_window(), keys.rate_failures, keys.rate_state, keys.alert_outbox]

    def _args(self, member: str, at_ms: int, failed: str) -> list[str | int]:
        return [member, at_ms, failed, self._window_ms, repr(self._threshold), self._min_stops]

    async def evaluate(self) -> str:
        """Slide the window without a new stop, so a quiet spell can resolve the alert."""
        return await self._run("", 0, "0")

    async def firing(self) -> RateChange | None:
        """The incident firing now, as its firing notification (with today's counts)."""
        keys = self._keys
        firing, incident = await self._redis.hmget(keys.rate_state, ["firing", "incident"])
        if firing != b"1" or not isinstance(incident, bytes):
            return None
        stops = await self._redis.zcard(keys.rate_window())
        failed = await self._redis.zcard(keys.rate_failures)
        fields = {
            b"status": b"firing",
            b"incident": incident,
            b"failed": b"%d" % failed,
            b"stops": b"%d" % stops,
            b"at": b"%d" % (time.time() * 1000),
        }
        return rate_change_from_outbox(fields, self._settings)

    async def _run(self, member: str, at_ms: int, failed: str) -> str:
        result = await self._script(
            keys=self._script_keys(), args=self._args(member, at_ms, failed)
        )
        change = result[2]
        return change.decode() if isinstance(change, bytes) else str(change)


def rate_change_from_outbox(fields: dict[bytes, bytes], settings: Settings) -> RateChange:
    status = fields[b"status"].decode()
    incident = int(fields[b"incident"])
    failed, stops = int(fields[b"failed"]), int(fields[b"stops"])
    at = datetime.fromtimestamp(int(fields[b"at"]) / 1000, UTC)
    return RateChange(
        status="firing" if status == "firing" else "resolved",
        dedup_key=f"{settings.key_prefix}-failure-rate-{incident}",
        incident=incident,
        failed=failed,
        stops=stops,
        share=failed / stops if stops else 0.0,
        threshold=settings.alert_rate_threshold,
        min_stops=settings.alert_rate_min_stops,
        window_s=settings.alert_rate_window.total_seconds(),
        at=at.isoformat(timespec="milliseconds"),
    )
