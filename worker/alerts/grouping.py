"""Groups of alerts, shared by every worker: the first goes out at once, the rest in summaries.

State is in Redis and changed only by the two scripts below, so N workers agree on which
alert is a group's first and each window is closed once. A closed window with alerts in
it becomes one summary on the outbox stream, written by the same script that empties the
window: a summary cannot be lost between the two, nor written twice.

- A group opens with its first alert, which is sent at once; it stays open for
  `repeat_interval`, after which its next alert is again sent at once (a reminder that the
  failure goes on).
- The alerts that follow within an open group are counted; every `group_interval` the
  count and a few examples become one summary. A window with no alert sends nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys

from .clock import NOW_MS
from .notifications import Summary
from .options import AlertOptions
from .pipelined import Call
from .rules import Alert, group_labels

__all__ = [
    "MAX_EXAMPLES",
    "Decision",
    "Groups",
    "decision_of",
    "group_id",
    "summary_from_outbox",
]

MAX_EXAMPLES: Final = 5
Decision = Literal["first", "grouped"]

# KEYS: seen, group, examples, due. ARGV: group id, group interval ms, repeat interval ms,
# once ttl ms, alert key, alert json, max examples, labels json, severity.
_REGISTER: Final = (
    NOW_MS
    + """
local seen = redis.call('GET', KEYS[1])
if seen then return seen end
local decision = 'grouped'
local open_until = tonumber(redis.call('HGET', KEYS[2], 'open_until') or '0')
if now >= open_until then
  decision = 'first'
  redis.call('HSET', KEYS[2], 'open_until', now + tonumber(ARGV[3]), 'first_key', ARGV[5],
             'labels', ARGV[8])
else
  redis.call('HINCRBY', KEYS[2], 'pending', 1)
  if ARGV[9] == 'error' then
    redis.call('HSET', KEYS[2], 'pending_severity', 'error')
  else
    redis.call('HSETNX', KEYS[2], 'pending_severity', ARGV[9])
  end
  if redis.call('LLEN', KEYS[3]) < tonumber(ARGV[7]) then
    redis.call('RPUSH', KEYS[3], ARGV[6])
  end
end
redis.call('PERSIST', KEYS[2])
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('HSET', KEYS[2], 'window_start', now)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
end
redis.call('SET', KEYS[1], decision, 'PX', ARGV[4])
return decision
"""
)

# The batch form of _REGISTER: the alerts of a batch in their order, as if each ran
# _REGISTER in turn (with one clock), each group's state read and written once, not once
# per alert. KEYS: due. ARGV: the seen and group key heads and the examples key tail (a
# group's keys are head .. id and head .. id .. tail; an alert's seen key, head .. alert
# key), group interval ms, repeat interval ms, once ttl ms, max examples; then two
# MessagePack arrays: the groups (per group its id and labels json) and the alerts (per
# alert its group's number, alert key, severity and alert json, '' for one that cannot be
# an example: past the first few of its group in the batch). Returns the decisions.
_REGISTER_MANY: Final = (
    NOW_MS
    + """
local seen_head, group_head, examples_tail = ARGV[1], ARGV[2], ARGV[3]
local interval, rep, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local max_examples = tonumber(ARGV[7])
local listed, groups = cmsgpack.unpack(ARGV[8]), {}
for g = 1, #listed / 2 do
  groups[g] = {id = listed[2 * g - 1], labels = listed[2 * g]}
end
local items = cmsgpack.unpack(ARGV[9])
local out, decided = {}, {}
for i = 1, #items, 4 do
  local g, key, severity = groups[items[i]], items[i + 1], items[i + 2]
  local decision = decided[key] or redis.call('GET', seen_head .. key)
  if not decision then
    local group = group_head .. g.id
    if not g.open_until then
      g.open_until = tonumber(redis.call('HGET', group, 'open_until') or '0')
      g.pending, g.examples = 0, {}
      g.room = max_examples - redis.call('LLEN', group .. examples_tail)
    end
    if now >= g.open_until then
      decision = 'first'
      g.open_until = now + rep
      redis.call('HSET', group, 'open_until', g.open_until, 'first_key', key, 'labels', g.labels)
    else
      decision = 'grouped'
      g.pending = g.pending + 1
      if severity == 'error' then g.error = true
      elseif not g.severity then g.severity = severity end
      if #g.examples < g.room and items[i + 3] ~= '' then
        g.examples[#g.examples + 1] = items[i + 3]
      end
    end
    redis.call('SET', seen_head .. key, decision, 'PX', ttl)
  end
  decided[key] = decision
  out[#out + 1] = decision
end
for _, g in ipairs(groups) do
  if g.open_until then
    local group = group_head .. g.id
    if g.pending > 0 then
      redis.call('HINCRBY', group, 'pending', g.pending)
      if g.error then
        redis.call('HSET', group, 'pending_severity', 'error')
      else
        redis.call('HSETNX', group, 'pending_severity', g.severity)
      end
      if #g.examples > 0 then redis.call('RPUSH', group .. examples_tail, unpack(g.examples)) end
    end
    redis.call('PERSIST', group)
    if not redis.call('ZSCORE', KEYS[1], g.id) then
      redis.call('HSET', group, 'window_start', now)
      redis.call('ZADD', KEYS[1], now + interval, g.id)
    end
  end
end
return out
"""
)

# KEYS: group, examples, due, outbox. ARGV: group id, group interval ms.
# Returns the number of alerts summarised (0 if the window was empty or not yet due).
_CLOSE: Final = (
    NOW_MS
    + """
local due = redis.call('ZSCORE', KEYS[3], ARGV[1])
if (not due) or tonumber(due) > now then return 0 end
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
if pending > 0 then
  local h = redis.call('HMGET', KEYS[1], 'window_start', 'first_key', 'labels', 'pending_severity')
  local examples = redis.call('LRANGE', KEYS[2], 0, -1)
  redis.call('XADD', KEYS[4], '*', 'kind', 'summary', 'group_id', ARGV[1], 'count', pending,
             'window_start', h[1] or now, 'window_end', now, 'first_key', h[2] or '',
             'labels', h[3] or '{}', 'severity', h[4] or 'error',
             'examples', '[' .. table.concat(examples, ',') .. ']')
  redis.call('HSET', KEYS[1], 'pending', 0, 'window_start', now)
  redis.call('HDEL', KEYS[1], 'pending_severity')
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
  return pending
end
redis.call('ZREM', KEYS[3], ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], open_until)
end
return 0
"""
)

_encode: Final = msgspec.json.encode
_GROUPS_KEPT: Final = 10_000
_pack: Final = msgspec.msgpack.Encoder().encode
_labels_decoder: Final = msgspec.json.Decoder(dict[str, str])
_examples_decoder: Final = msgspec.json.Decoder(list[Alert])


def group_id(labels: dict[str, str]) -> str:
    """A short, stable name for a group, fit for a Redis key."""
    canonical = _encode(sorted(labels.items()))
    return hashlib.sha256(canonical).hexdigest()[:16]


def _ms(value: int) -> int:
    return max(1, value)


def _iso_ms(ms: bytes | str | int) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds")


class Groups:
    def __init__(self, redis: Redis, keys: Keys, options: AlertOptions) -> None:
        self._redis = redis
        self._keys = keys
        self._group_by = list(options.group_by)
        self._interval_ms = _ms(int(options.group_interval.total_seconds() * 1000))
        self._repeat_ms = _ms(int(options.repeat_interval.total_seconds() * 1000))
        self._once_ttl_ms = _ms(int(options.once_ttl.total_seconds() * 1000))
        self._register = redis.register_script(_REGISTER)
        self._register_many = redis.register_script(_REGISTER_MANY)
        self._close = redis.register_script(_CLOSE)
        group_head = keys.alert_group("")
        self._heads = [
            keys.alert_seen(""),
            group_head,
            keys.alert_group_examples("").removeprefix(group_head),
            self._interval_ms,
            self._repeat_ms,
            self._once_ttl_ms,
            MAX_EXAMPLES,
        ]
        # Group id and labels json by the labels: the same few groups, batch
        # after batch (bounded: cleared when it grows past _GROUPS_KEPT).
        self._ids: dict[tuple[tuple[str, str], ...], tuple[str, str]] = {}

    async def register(self, alert: Alert) -> Decision:
        """Take an alert into its group, once: the same alert again gets the same answer."""
        call = self.register_call(alert)
        return decision_of(await self._register(keys=call.keys, args=call.args))

    def register_call(self, alert: Alert) -> Call:
        """What `register` runs, to run in a batch; `decision_of` reads its result."""
        labels = group_labels(alert, self._group_by)
        gid = group_id(labels)
        return Call(
            self._register,
            [
                self._keys.alert_seen(alert.alert_key),
                self._keys.alert_group(gid),
                self._keys.alert_group_examples(gid),
                self._keys.alert_groups_due,
            ],
            [
                gid,
                self._interval_ms,
                self._repeat_ms,
                self._once_ttl_ms,
                alert.alert_key,
                _encode(alert),
                MAX_EXAMPLES,
                _encode(labels),
                alert.severity,
            ],
        )

    def register_many_call(self, alerts: Sequence[Alert]) -> Call:
        """`register` for each of a batch's alerts, in order, as one call: its result is
        their decisions (read each with `decision_of`)."""
        numbers: dict[str, int] = {}
        groups: list[str] = []
        items: list[str | int] = []
        # Per group, the alerts that may become examples (their json is sent): the first
        # few of the batch, one more than the examples, as the first may be the group's
        # first alert. One registered before (a redelivery) among them leaves its place
        # empty: a summary then has fewer examples, never another count.
        examples: dict[int, set[str]] = {}
        for alert in alerts:
            gid, labels = self._group_of(alert)
            number = numbers.get(gid)
            if number is None:
                number = numbers[gid] = len(numbers) + 1
                groups += (gid, labels)
                examples[number] = set()
            seen = examples[number]
            json = ""
            if len(seen) <= MAX_EXAMPLES and alert.alert_key not in seen:
                seen.add(alert.alert_key)
                json = _encode(alert).decode()
            items += (number, alert.alert_key, alert.severity, json)
        return Call(
            self._register_many,
            [self._keys.alert_groups_due],
            [*self._heads, _pack(groups), _pack(items)],
        )

    def _group_of(self, alert: Alert) -> tuple[str, str]:
        labels = group_labels(alert, self._group_by)
        values = tuple(labels.items())
        known = self._ids.get(values)
        if known is None:
            if len(self._ids) >= _GROUPS_KEPT:
                self._ids.clear()
            known = self._ids[values] = (group_id(labels), _encode(labels).decode())
        return known

    async def close_due(self, limit: int = 100) -> int:
        """Close every window that is due; returns how many alerts went into summaries."""
        seconds, micros = await self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        due = await self._redis.zrangebyscore(
            self._keys.alert_groups_due, "-inf", now_ms, start=0, num=limit
        )
        summarised = 0
        for raw in due:
            gid = raw.decode() if isinstance(raw, bytes) else str(raw)
            summarised += int(
                await self._close(
                    keys=[
                        self._keys.alert_group(gid),
                        self._keys.alert_group_examples(gid),
                        self._keys.alert_groups_due,
                        self._keys.alert_outbox,
                    ],
                    args=[gid, self._interval_ms],
                )
            )
        return summarised


def decision_of(result: object) -> Decision:
    return "first" if result in (b"first", "first") else "grouped"


def summary_from_outbox(entry_id: str, fields: dict[bytes, bytes]) -> Summary:
    severity = fields.get(b"severity", b"error").decode()
    return Summary(
        summary_key=f"{fields[b'group_id'].decode()}-{entry_id}",
        dedup_key=fields[b"first_key"].decode(),
        severity="warning" if severity == "warning" else "error",
        group=_labels_decoder.decode(fields[b"labels"]),
        count=int(fields[b"count"]),
        examples=_examples_decoder.decode(fields[b"examples"]),
        window_start=_iso_ms(fields[b"window_start"]),
        window_end=_iso_ms(fields[b"window_end"]),
    )
