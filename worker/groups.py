"""Consumer groups as an operator sees them, and retiring one.

A group keeps every entry it has not acknowledged from being trimmed (until the emergency
length cap), so a consumer that is gone for good must have its group removed. A group
with a live member is refused: its workers would only create it again, from the oldest
kept entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.keys import Keys
from shared.redis_values import as_text

from .heartbeat import alive

__all__ = ["GroupInUse", "GroupSummary", "list_groups", "remove_group"]


class GroupInUse(Exception):
    """The group has members whose heartbeat is still fresh."""

    def __init__(self, group: str, live: list[str]) -> None:
        super().__init__(f"group {group!r} has live members: {', '.join(live)}")
        self.group = group
        self.live = live


@dataclass(slots=True)
class GroupSummary:
    """One group over every event stream it reads."""

    name: str
    streams: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    pending: int = 0
    lag: int | None = 0  # None when Redis cannot tell for some stream


async def _groups_of(redis: Redis, stream: str) -> list[dict[str, Any]]:
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return []
    return groups


async def list_groups(redis: Redis, keys: Keys) -> list[GroupSummary]:
    """Every group on the event streams, with its members and which of them are alive."""
    summaries: dict[str, GroupSummary] = {}
    for stream in keys.event_streams():
        for info in await _groups_of(redis, stream):
            name = as_text(info["name"])
            summary = summaries.setdefault(name, GroupSummary(name))
            summary.streams.append(stream)
            summary.pending += int(info["pending"])
            lag = info.get("lag")
            summary.lag = None if lag is None or summary.lag is None else summary.lag + int(lag)
            for member in await redis.xinfo_consumers(stream, name):
                member_name = as_text(member["name"])
                if member_name not in summary.members:
                    summary.members.append(member_name)
    for summary in summaries.values():
        liveness = await alive(redis, keys, summary.name, summary.members)
        summary.live = [member for member, up in liveness.items() if up]
    return sorted(summaries.values(), key=lambda s: s.name)


async def remove_group(redis: Redis, keys: Keys, name: str, *, force: bool = False) -> list[str]:
    """Destroy the group on every event stream; the streams it was removed from.

    Raises GroupInUse if a member is alive, unless `force`; KeyError if there is no such
    group.
    """
    summary = next((s for s in await list_groups(redis, keys) if s.name == name), None)
    if summary is None:
        raise KeyError(name)
    if summary.live and not force:
        raise GroupInUse(name, summary.live)
    removed = []
    for stream in summary.streams:
        if await redis.xgroup_destroy(stream, name):
            removed.append(stream)
    return removed
