"""Consumer-group plumbing for recovery: create groups, list and take over pending entries,
remove members that are gone.

Redis keeps the delivery count of every pending entry (XPENDING `times_delivered`) and
increments it on each XREADGROUP, XCLAIM and XAUTOCLAIM, so counts survive crashes and
move with an entry from one worker to another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.redis_values import parse_stream_id

__all__ = [
    "Member",
    "Pending",
    "autoclaim",
    "before",
    "claim",
    "create_group",
    "members",
    "pending_of",
    "remove_member",
]

RawEntry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Member:
    """A consumer-group member (a worker id), as XINFO CONSUMERS reports it."""

    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class Pending:
    entry_id: bytes
    deliveries: int


async def create_group(redis: Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Create the group (and the stream); False if it already exists."""
    try:
        await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


async def members(redis: Redis, stream: str, group: str) -> list[Member]:
    rows: Any = await redis.xinfo_consumers(stream, group)
    return [
        Member(
            name=row["name"].decode() if isinstance(row["name"], bytes) else row["name"],
            pending=int(row["pending"]),
            idle_ms=int(row["idle"]),
        )
        for row in rows
    ]


async def pending_of(
    redis: Redis, stream: str, group: str, member: str, count: int, start: str = "-"
) -> list[Pending]:
    rows: Any = await redis.xpending_range(
        stream, group, min=start, max="+", count=count, consumername=member
    )
    return [Pending(row["message_id"], int(row["times_delivered"])) for row in rows]


async def claim(
    redis: Redis,
    stream: str,
    group: str,
    worker_id: str,
    ids: list[bytes],
    min_idle_ms: int,
    deliveries: int | None = None,
) -> list[RawEntry]:
    """XCLAIM `ids` for `worker_id`. Entries trimmed away meanwhile are dropped by Redis
    from the pending list and are not returned; nor are those idle less than `min_idle_ms`
    (another worker took them first). `deliveries`: the delivery count Redis is to keep
    for them (RETRYCOUNT) instead of adding one."""
    if not ids:
        return []
    rows: Any = await redis.xclaim(
        stream, group, worker_id, min_idle_ms, list[Any](ids), retrycount=deliveries
    )
    return [(entry_id, fields) for entry_id, fields in rows if fields is not None]


async def autoclaim(
    redis: Redis,
    stream: str,
    group: str,
    worker_id: str,
    min_idle_ms: int,
    start: bytes,
    count: int,
) -> tuple[bytes, list[RawEntry], list[bytes]]:
    """One XAUTOCLAIM page: (next start, claimed entries, ids whose entries were trimmed)."""
    reply: Any = await redis.xautoclaim(
        stream, group, worker_id, min_idle_ms, start_id=start, count=count
    )
    next_start, rows = reply[0], reply[1]
    deleted = list(reply[2]) if len(reply) > 2 else []
    return next_start, [(i, f) for i, f in rows if f is not None], deleted


# Deleting a member also deletes its pending entries, which would then never be handled:
# the check and the deletion are one script, so an entry cannot be delivered in between.
_REMOVE_IF_IDLE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


async def remove_member(redis: Redis, stream: str, group: str, member: str) -> bool:
    """Remove a member that owns no pending entry; False if it owns some."""
    script: Any = redis.register_script(_REMOVE_IF_IDLE)
    return int(await script(keys=[stream], args=[group, member])) >= 0


def before(entry_id: bytes | str) -> str:
    """The id just before `entry_id`: a group created there delivers `entry_id` next."""
    ms, seq = parse_stream_id(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-18446744073709551615"
    return "0-0"
