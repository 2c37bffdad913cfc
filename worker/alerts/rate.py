"""The rate rule: alert when too large a share of transcription stops failed, and on recovery.

Stops are kept in a sorted set by receive time over a sliding window, each stop once (a
redelivery does not count twice). One script records a stop, trims the window, counts,
and flips the firing state: the flip and the notification it owes go onto the outbox in
the same step, so N workers fire once per incident and resolve once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from redis.asyncio import Redis

from shared.events import Stopped, event_identity
from shared.keys import Keys

from .clock import NOW_MS
from .notifications import RateChange
from .options import AlertOptions
from .pipelined import Call

__all__ = ["RateRule", "rate_change_from_outbox"]

# KEYS: stops, failed, state, outbox. ARGV: window ms, threshold, min stops, then for each
# stop to record (none to only evaluate) its member, at ms and failed flag. The stops of a
# batch are recorded together and the window evaluated once after them.
# Returns {stops, failed, change}.
_EVALUATE: Final = (
    NOW_MS
    + """local since = now - tonumber(ARGV[1])
for i = 4, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) > since then
    redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i])
    if ARGV[i + 2] == '1' then redis.call('ZADD', KEYS[2], 'NX', ARGV[i + 1], ARGV[i]) end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
local stops = redis.call('ZCARD', KEYS[1])
local failed = redis.call('ZCARD', KEYS[2])
local threshold = tonumber(ARGV[2])
local firing = redis.call('HGET', KEYS[3], 'firing') == '1'
local change = ''
if (not firing) and stops >= tonumber(ARGV[3]) and failed > threshold * stops then
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
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 60000)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]) + 60000)
end
return {stops, failed, change}
"""
)


class RateRule:
    def __init__(self, redis: Redis, keys: Keys, options: AlertOptions) -> None:
        self._keys = keys
        self._redis = redis
        self._options = options
        self._window_ms = max(1, int(options.rate_window.total_seconds() * 1000))
        self._threshold = options.rate_threshold
        self._min_stops = options.rate_min_stops
        self._failing = frozenset(options.causes)
        self._script = redis.register_script(_EVALUATE)

    async def record(self, event: Stopped, at_ms: int) -> str:
        """Count one stop (failed or not) at its receive time; returns the change, if any."""
        call = self.record_call([(event, at_ms)])
        return _change(await self._script(keys=call.keys, args=call.args))

    def record_call(self, stops: Sequence[tuple[Stopped, int]]) -> Call:
        """Count these stops, each at its receive time, then evaluate once: a batch's."""
        args: list[str | int] = [self._window_ms, repr(self._threshold), self._min_stops]
        failing = self._failing
        for event, at_ms in stops:
            args += (event_identity(event), at_ms, "1" if event.cause in failing else "0")
        keys = self._keys
        return Call(
            self._script,
            [keys.rate_window(), keys.rate_failures, keys.rate_state, keys.alert_outbox],
            args,
        )

    async def evaluate(self) -> str:
        """Slide the window without a new stop, so a quiet spell can resolve the alert."""
        call = self.record_call([])
        return _change(await self._script(keys=call.keys, args=call.args))

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
        return rate_change_from_outbox(fields, self._options)


def _change(result: list[object]) -> str:
    change = result[2]
    return change.decode() if isinstance(change, bytes) else str(change)


def rate_change_from_outbox(fields: dict[bytes, bytes], options: AlertOptions) -> RateChange:
    status = fields[b"status"].decode()
    incident = int(fields[b"incident"])
    failed, stops = int(fields[b"failed"]), int(fields[b"stops"])
    at = datetime.fromtimestamp(int(fields[b"at"]) / 1000, UTC)
    return RateChange(
        status="firing" if status == "firing" else "resolved",
        dedup_key=f"{options.key_prefix}-failure-rate-{incident}",
        incident=incident,
        failed=failed,
        stops=stops,
        share=failed / stops if stops else 0.0,
        threshold=options.rate_threshold,
        min_stops=options.rate_min_stops,
        window_s=options.rate_window.total_seconds(),
        at=at.isoformat(timespec="milliseconds"),
    )
