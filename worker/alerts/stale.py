"""Stale transcriptions: a Started whose Stopped or Rejected has not come in time.

No event arrives when a webhook is lost or a transcription is stuck open, so nothing else
would alert. Each Started opens a record in Redis (its stale alert, ready to send) with
a due time in a sorted set; its Stopped or Rejected closes it. The worker holding the
alerts lease scans what is due and raises each stale alert through the usual path
(silences, log, grouping, sinks, each once); only once it went through is the record
turned into a `stale` marker, so a worker dying mid-way loses nothing: the next holder
finds it still due. A Stopped that finds the marker puts a resolve on the outbox.

Every key has a TTL (the open record and the tombstone of a stop: twice `stale_after`
plus a margin; the marker: the once-records' TTL), and the sorted set is trimmed as it
is scanned, so memory stays bounded whatever is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from redis.asyncio import Redis

from shared.events import Rejected, Started, Stopped
from shared.keys import Keys
from shared.settings import format_duration

from .notifications import StaleResolved
from .options import AlertOptions
from .pipelined import Call
from .rules import Alert, alert_about

__all__ = ["STALE_CAUSE", "StaleRule", "stale_resolved_from_outbox"]

STALE_CAUSE: Final = "stale"
_MARGIN_MS: Final = 10 * 60 * 1000
_BATCH: Final = 100

_NOW_MS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: open, due, closed, stale, outbox. ARGV: 'open' or 'close', transcription id,
# alert json, stale after ms, ttl ms (of the open record and the closed marker), stale
# ttl ms. One script for both, so the Started and Stopped of one transcription in one
# batch run in their order.
# Open: a redelivered Started keeps its first due time; one after its stop opens nothing.
# Close: 1 if a raised stale alert is resolved by this stop.
_RECORD: Final = (
    _NOW_MS
    + """
if ARGV[1] == 'open' then
  if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
  if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[5]) then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[2])
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return 1
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
local alert = redis.call('GET', KEYS[4])
if alert and alert ~= 'resolved' then
  redis.call('XADD', KEYS[5], '*', 'kind', 'stale_resolved', 'alert', alert, 'at', now)
  redis.call('SET', KEYS[4], 'resolved', 'PX', ARGV[6])
  return 1
end
return 0
"""
)

# KEYS: open, due, stale, outbox. ARGV: transcription id, alert json, stale ttl ms, silenced
# ('1': a silenced alert is never resolved). After the stale alert went through: 1 marked
# raised; 0 stopped meanwhile, resolved now; 2 another worker got there first.
_RAISED: Final = (
    _NOW_MS
    + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[3], ARGV[4] == '1' and 'resolved' or ARGV[2], 'PX', ARGV[3])
  return 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
if ARGV[4] ~= '1' then
  redis.call('XADD', KEYS[4], '*', 'kind', 'stale_resolved', 'alert', ARGV[2], 'at', now)
end
redis.call('SET', KEYS[3], 'resolved', 'PX', ARGV[3])
return 0
"""
)

_alert_decoder: Final = msgspec.json.Decoder(Alert)


def stale_alert(event: Started, stale_after: timedelta) -> Alert:
    """The alert a Started raises if its transcription is still open after `stale_after`."""
    return alert_about(
        event,
        key_parts=(STALE_CAUSE,),
        severity="warning",
        cause=STALE_CAUSE,
        error_message=(
            f"no Stopped or Rejected {format_duration(stale_after)} after Started "
            "(a lost webhook, or a transcription stuck open)"
        ),
        duration_s=None,
    )


class StaleRule:
    def __init__(self, redis: Redis, keys: Keys, options: AlertOptions) -> None:
        self._redis = redis
        self._keys = keys
        self._stale_after = options.stale_after
        self._after_ms = int(options.stale_after.total_seconds() * 1000)
        self._ttl_ms = 2 * self._after_ms + _MARGIN_MS
        self._stale_ttl_ms = max(1, int(options.once_ttl.total_seconds() * 1000))
        self._record = redis.register_script(_RECORD)
        self._raised = redis.register_script(_RAISED)

    @property
    def enabled(self) -> bool:
        return self._after_ms > 0

    async def record(self, event: Started | Stopped | Rejected) -> bool:
        """Open on a Started, close on a Stopped or Rejected; True if that resolved an alert."""
        call = self.record_call(event)
        if call is None:
            return False
        resolved = await self._record(keys=call.keys, args=call.args)
        return isinstance(event, Stopped | Rejected) and bool(resolved)

    def record_call(self, event: Started | Stopped | Rejected) -> Call | None:
        """What `record` runs, to run in a batch; None when the rule is off."""
        if not self.enabled:
            return None
        tid = event.transcription_info.id
        keys = self._keys
        opens = isinstance(event, Started)
        alert = b""
        if isinstance(event, Started):
            alert = msgspec.json.encode(stale_alert(event, self._stale_after))
        return Call(
            self._record,
            [
                keys.alert_open(tid),
                keys.alert_open_due,
                keys.alert_closed(tid),
                keys.alert_stale(tid),
                keys.alert_outbox,
            ],
            [
                "open" if opens else "close",
                tid,
                alert,
                self._after_ms,
                self._ttl_ms,
                self._stale_ttl_ms,
            ],
        )

    async def due(self) -> list[Alert]:
        """Stale alerts due now (at most a batch); records gone by themselves are dropped."""
        if not self.enabled:
            return []
        seconds, micros = await self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        keys = self._keys
        members = await self._redis.zrangebyscore(
            keys.alert_open_due, "-inf", now_ms, start=0, num=_BATCH
        )
        alerts = []
        for raw in members:
            tid = raw.decode() if isinstance(raw, bytes) else str(raw)
            body = await self._redis.get(keys.alert_open(tid))
            if body is None:
                await self._redis.zrem(keys.alert_open_due, tid)
                continue
            alerts.append(_alert_decoder.decode(body))
        return alerts

    async def raised(self, alert: Alert, *, silenced: bool = False) -> None:
        """The stale alert went through every sink: remember it, for a late stop to resolve
        (a silenced one was never sent, so nothing resolves it)."""
        tid = alert.transcription_id
        keys = self._keys
        await self._raised(
            keys=[
                keys.alert_open(tid),
                keys.alert_open_due,
                keys.alert_stale(tid),
                keys.alert_outbox,
            ],
            args=[tid, msgspec.json.encode(alert), self._stale_ttl_ms, "1" if silenced else "0"],
        )


def stale_resolved_from_outbox(fields: dict[bytes, bytes]) -> StaleResolved:
    alert = _alert_decoder.decode(fields[b"alert"])
    at = datetime.fromtimestamp(int(fields[b"at"]) / 1000, UTC)
    return StaleResolved(
        dedup_key=alert.alert_key, alert=alert, at=at.isoformat(timespec="milliseconds")
    )
