"""Silence of the whole feed: no event received for `RTT_ALERT_QUIET_AFTER`, and its end.

The last event's receive time is read from the event streams themselves (the id Redis
last generated), so no handler has to record anything and any worker can tell. Only the
lease holder asks; one script flips the state and puts the notification on the outbox in
the same step, so an overlap of two holders still fires once per incident and resolves
once. A stream that never had an event counts from when the first holder looked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.keys import Keys
from shared.redis_values import id_ms

from .clock import NOW_MS
from .notifications import QuietChange
from .options import AlertOptions

__all__ = ["QuietRule", "quiet_change_from_outbox"]

# KEYS: state, outbox. ARGV: last event ms ('' if none ever), quiet after ms.
_EVALUATE: Final = (
    NOW_MS
    + """local since = redis.call('HGET', KEYS[1], 'since')
if not since then
  redis.call('HSET', KEYS[1], 'since', now)
  since = now
end
local last = tonumber(since)
if ARGV[1] ~= '' then last = math.max(last, tonumber(ARGV[1])) end
local change = ''
if redis.call('HGET', KEYS[1], 'firing') == '1' then
  if last > tonumber(redis.call('HGET', KEYS[1], 'last')) then
    redis.call('HSET', KEYS[1], 'firing', '0')
    change = 'resolved'
  end
elseif now - last >= tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'incident', 1)
  redis.call('HSET', KEYS[1], 'firing', '1', 'last', last)
  change = 'firing'
end
if change ~= '' then
  redis.call('XADD', KEYS[2], '*', 'kind', 'quiet', 'status', change,
             'incident', redis.call('HGET', KEYS[1], 'incident'), 'last', last, 'at', now)
end
return change
"""
)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class QuietRule:
    def __init__(self, redis: Redis, keys: Keys, options: AlertOptions) -> None:
        self._redis = redis
        self._keys = keys
        self._options = options
        self._after_ms = int(options.quiet_after.total_seconds() * 1000)
        self._script = redis.register_script(_EVALUATE)

    @property
    def enabled(self) -> bool:
        return self._after_ms > 0

    async def last_event_ms(self) -> int | None:
        """When the newest event was stored, over every shard: its stream id's time."""
        newest: int | None = None
        for stream in self._keys.event_streams():
            try:
                info: Any = await self._redis.xinfo_stream(stream)
            except ResponseError:  # no such stream yet: nothing ever received
                continue
            last = info.get("last-generated-id") or b"0-0"
            ms = id_ms(last)
            if ms and (newest is None or ms > newest):
                newest = ms
        return newest

    async def evaluate(self) -> str:
        """Fire when the feed has been quiet too long, resolve when an event came since."""
        if not self.enabled:
            return ""
        last = await self.last_event_ms()
        change = await self._script(
            keys=[self._keys.quiet_state, self._keys.alert_outbox],
            args=["" if last is None else last, self._after_ms],
        )
        return change.decode() if isinstance(change, bytes) else str(change)

    async def firing(self) -> QuietChange | None:
        """The quiet incident firing now, for a re-send to Alertmanager."""
        firing, incident, last = await self._redis.hmget(
            self._keys.quiet_state, ["firing", "incident", "last"]
        )
        if firing != b"1" or incident is None or last is None:
            return None
        seconds, micros = await self._redis.time()
        fields: dict[bytes, bytes] = {
            b"status": b"firing",
            b"incident": _bytes(incident),
            b"last": _bytes(last),
            b"at": b"%d" % (seconds * 1000 + micros // 1000),
        }
        return quiet_change_from_outbox(fields, self._options)


def quiet_change_from_outbox(fields: dict[bytes, bytes], options: AlertOptions) -> QuietChange:
    incident = int(fields[b"incident"])
    last, at = int(fields[b"last"]), int(fields[b"at"])
    return QuietChange(
        status="firing" if fields[b"status"] == b"firing" else "resolved",
        dedup_key=f"{options.key_prefix}-feed-quiet-{incident}",
        incident=incident,
        last_event_at=_iso(last),
        quiet_s=(at - last) / 1000,
        quiet_after_s=options.quiet_after.total_seconds(),
        at=_iso(at),
    )
