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

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from redis.asyncio import Redis

from shared.events import Rejected, Started, Stopped
from shared.keys import Keys
from shared.settings import format_duration

from .clock import NOW_MS
from .notifications import StaleResolved
from .options import AlertOptions
from .pipelined import Call
from .rules import Alert, alert_about, alert_key

__all__ = ["STALE_CAUSE", "StaleRule", "stale_resolved_from_outbox"]

STALE_CAUSE: Final = "stale"
_MARGIN_MS: Final = 10 * 60 * 1000
_BATCH: Final = 100

# KEYS: due, outbox. ARGV: the open, closed and stale key prefixes (a transcription id
# ends each key: one slot, the alerts'), stale after ms, ttl ms (of the open record and the
# closed marker), stale ttl ms; then the batch's events, in order, as one MessagePack
# array (packed at C speed, not as an argument each): per event 'o' (a Started) or 'c'
# (a Stopped or Rejected), its transcription id, and its open record ('' for a 'c').
# One script for both, so the Started and Stopped of one transcription in one batch run
# in their order; the clock read once.
# Open: a redelivered Started keeps its first due time; one after its stop opens nothing.
# Close: the stop's marker; a record still open is dropped with its due time, else a
# raised stale alert is resolved (nothing can have been raised while it was open).
# Returns how many raised alerts were resolved.
_RECORD: Final = (
    NOW_MS
    + """
local open, closed, stale = ARGV[1], ARGV[2], ARGV[3]
local after, ttl = tonumber(ARGV[4]), ARGV[5]
local opened, resolved = false, 0
local items = cmsgpack.unpack(ARGV[7])
for i = 1, #items, 3 do
  local tid = items[i + 1]
  if items[i] == 'o' then
    if redis.call('EXISTS', closed .. tid) == 0
        and redis.call('SET', open .. tid, items[i + 2], 'NX', 'PX', ttl) then
      redis.call('ZADD', KEYS[1], now + after, tid)
      opened = true
    end
  else
    redis.call('SET', closed .. tid, '1', 'PX', ttl)
    if redis.call('DEL', open .. tid) == 1 then
      redis.call('ZREM', KEYS[1], tid)
    else
      local alert = redis.call('GET', stale .. tid)
      if alert and alert ~= 'resolved' then
        redis.call('XADD', KEYS[2], '*', 'kind', 'stale_resolved', 'alert', alert, 'at', now)
        redis.call('SET', stale .. tid, 'resolved', 'PX', ARGV[6])
        resolved = resolved + 1
      end
    end
  end
end
if opened then redis.call('PEXPIRE', KEYS[1], ttl) end
return resolved
"""
)

# KEYS: open, due, stale, outbox. ARGV: transcription id, alert json, stale ttl ms, silenced
# ('1': a silenced alert is never resolved). After the stale alert went through: 1 marked
# raised; 0 stopped meanwhile, resolved now; 2 another worker got there first.
_RAISED: Final = (
    NOW_MS
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


class _Open(msgspec.Struct, array_like=True, frozen=True):
    """What a Started leaves for its stale alert: the fields the alert takes from it, as a
    JSON array (a tenth of the cost of the alert itself, which is built only if due)."""

    transcription_id: str
    call_id: str
    account_id: str
    application_id: str
    event_time: datetime
    transcription_name: str | None
    destination: str | None
    tracks: list[str]


_encode_open: Final = msgspec.json.Encoder().encode
_pack: Final = msgspec.msgpack.Encoder().encode
_open_decoder: Final = msgspec.json.Decoder(_Open)


def stale_alert(event: Started, stale_after: timedelta) -> Alert:
    """The alert a Started raises if its transcription is still open after `stale_after`."""
    return alert_about(
        event,
        key_parts=(STALE_CAUSE,),
        severity="warning",
        cause=STALE_CAUSE,
        error_message=_stale_message(stale_after),
        duration_s=None,
    )


def _stale_message(stale_after: timedelta) -> str:
    return (
        f"no Stopped or Rejected {format_duration(stale_after)} after Started "
        "(a lost webhook, or a transcription stuck open)"
    )


def stale_alert_of(record: _Open, stale_after: timedelta) -> Alert:
    """`stale_alert` of the Started that left this open record."""
    # The record's fields are the alert's own, by name; only the time changes type.
    taken = {**msgspec.structs.asdict(record), "event_time": record.event_time.isoformat()}
    return Alert(
        alert_key=alert_key(record.transcription_id, STALE_CAUSE),
        severity="warning",
        event_type=Started.__struct_config__.tag,  # type: ignore[arg-type]
        cause=STALE_CAUSE,
        error_message=_stale_message(stale_after),
        duration_s=None,
        **taken,
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
        self._record_keys = [keys.alert_open_due, keys.alert_outbox]
        self._args: list[str | int | bytes] = [
            keys.alert_open(""),
            keys.alert_closed(""),
            keys.alert_stale(""),
            self._after_ms,
            self._ttl_ms,
            self._stale_ttl_ms,
        ]

    @property
    def enabled(self) -> bool:
        return self._after_ms > 0

    async def record(self, event: Started | Stopped | Rejected) -> bool:
        """Open on a Started, close on a Stopped or Rejected; True if that resolved an alert."""
        call = self.record_call([event])
        if call is None:
            return False
        return bool(await self._record(keys=call.keys, args=call.args))

    def record_call(self, events: Sequence[Started | Stopped | Rejected]) -> Call | None:
        """What `record` runs, for the events of a batch in their order, as one call; None
        when the rule is off or there is nothing to record."""
        if not self.enabled or not events:
            return None
        items: list[str] = []
        for event in events:
            info = event.transcription_info
            if isinstance(event, Started):
                record = _encode_open(
                    _Open(
                        info.id,
                        event.call_id,
                        event.account_id,
                        event.application_id,
                        event.event_time,
                        info.name,
                        info.destination,
                        info.tracks,
                    )
                ).decode()
                items += ("o", info.id, record)
            else:
                items += ("c", info.id, "")
        return Call(self._record, self._record_keys, [*self._args, _pack(items)])

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
            alerts.append(self._alert_of(body))
        return alerts

    def _alert_of(self, body: bytes | str) -> Alert:
        """The stale alert of an open record: what the Started left (an array), or, from a
        worker before those, the alert itself (an object)."""
        raw = body.encode() if isinstance(body, str) else body
        if not raw.startswith(b"["):
            return _alert_decoder.decode(raw)
        record = _open_decoder.decode(raw)
        return stale_alert_of(record, self._stale_after)

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
