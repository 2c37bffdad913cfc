"""Retention: trim what every group acknowledged once it is older than the retention period.

The trim point is computed and applied inside one script, so a group cannot move between
the check and the trim. For each group the first entry it still needs is its oldest
pending entry, or the entry after the last one delivered to it; nothing from there on is
trimmed, however old. Only the length cap, an emergency valve, may drop such entries, and
the caller logs and counts what it dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

__all__ = ["TrimResult", "trim"]

# Stream ids compare as (ms, seq) pairs of decimal integers. Lua numbers are doubles, so
# they are compared as strings: the shorter one is smaller, equal lengths compare as text.
_TRIM = """
local function less_num(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  if am ~= bm then return less_num(am, bm) end
  return less_num(as, bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0} end
local floor = ARGV[1]
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
-- No group yet: nobody has received anything, so nothing may go.
if #groups == 0 then floor = '0-0' end
for _, flat in ipairs(groups) do
  local g = {}
  for i = 1, #flat, 2 do g[flat[i]] = flat[i + 1] end
  local needed = g['last-delivered-id']
  if tonumber(g['pending']) > 0 then
    needed = redis.call('XPENDING', KEYS[1], g['name'])[2]
  end
  if less(needed, floor) then floor = needed end
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', floor)
local capped = 0
local max_len = tonumber(ARGV[2])
if redis.call('XLEN', KEYS[1]) > max_len then
  capped = redis.call('XTRIM', KEYS[1], 'MAXLEN', max_len)
end
return {trimmed, capped, #groups}
"""


@dataclass(frozen=True, slots=True)
class TrimResult:
    trimmed: int  # acknowledged by every group and older than the retention period
    capped: int  # dropped by the length cap, acknowledged or not
    groups: int


async def trim(
    redis: Redis, stream: str, *, now_ms: int, retention_ms: int, max_len: int
) -> TrimResult:
    """Trim one stream. Keeping the last delivered entry itself costs one entry per group
    and saves incrementing an id in Lua."""
    cut = f"{max(0, now_ms - retention_ms)}-0"
    script: Any = redis.register_script(_TRIM)
    trimmed, capped, groups = await script(keys=[stream], args=[cut, max_len])
    return TrimResult(int(trimmed), int(capped), int(groups))
