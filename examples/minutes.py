"""Transcription minutes per account, kept in Redis, from Stopped events.

    rtt worker --consumer examples.minutes:minutes
    redis-cli HGETALL 'rtt:{minutes}:totals'      # account id -> minutes

Delivery is at-least-once: a worker that dies after the handler ran but before the
acknowledgement makes the event come again. So each transcription is counted once, by a
marker set in the same script that adds its minutes.
"""

from __future__ import annotations

from typing import Any

from shared.events import Event, Stopped
from worker import Context, SetupContext, consumer

# Both keys share the hash tag `{minutes}`, so the script stays on one Redis Cluster node.
_ADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2])
end
return false
"""
SEEN_TTL_S = 7 * 86_400  # longer than any redelivery can come late


def totals_key(prefix: str) -> str:
    return f"{prefix}:{{minutes}}:totals"


class MinutesCounter:
    async def setup(self, ctx: SetupContext) -> None:
        self.add_once: Any = ctx.redis.register_script(_ADD_ONCE)

    async def handle(self, event: Event, ctx: Context) -> None:
        info = event.transcription_info
        if info.duration is None:
            ctx.log.warning("minutes_without_duration")
            return
        prefix = ctx.key_prefix
        seen = f"{prefix}:{{minutes}}:seen:{info.id}"
        added = await self.add_once(
            keys=[totals_key(prefix), seen],
            args=[event.account_id, info.duration.total_seconds() / 60, SEEN_TTL_S],
        )
        if added is None:
            ctx.log.info("minutes_already_counted")


minutes = consumer("minutes", events=[Stopped])(MinutesCounter)
