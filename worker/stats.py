"""What the streams and groups look like right now: lengths, lag, pending, the DLQ.

One snapshot serves `rtt stats`, the periodic `worker_stats` line and `/metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.keys import Keys
from shared.redis_values import as_text, id_ms, now_ms

from .dlq import DlqDepth

__all__ = ["GroupStats", "Snapshot", "StreamStats", "take_snapshot"]


@dataclass(frozen=True, slots=True)
class GroupStats:
    name: str
    consumers: int
    pending: int
    lag: int | None  # entries not yet delivered; None when Redis cannot tell
    last_delivered_id: str
    oldest_pending_id: str | None
    oldest_pending_age_s: float | None  # since that entry was added to the stream


@dataclass(frozen=True, slots=True)
class StreamStats:
    stream: str
    length: int
    first_id: str | None
    last_id: str | None
    groups: list[GroupStats] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Snapshot:
    streams: list[StreamStats]
    dlq_length: int
    dlq_by_group: dict[str, int]
    taken_at_ms: int

    def group_totals(self, group: str) -> tuple[int, int]:
        """(lag, pending) of one group summed over the streams; unknown lag counts as 0."""
        lag = pending = 0
        for stream in self.streams:
            for item in stream.groups:
                if item.name == group:
                    lag += item.lag or 0
                    pending += item.pending
        return lag, pending

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": [
                {
                    "stream": s.stream,
                    "length": s.length,
                    "first_id": s.first_id,
                    "last_id": s.last_id,
                    "groups": [
                        {
                            "group": g.name,
                            "consumers": g.consumers,
                            "lag": g.lag,
                            "pending": g.pending,
                            "last_delivered_id": g.last_delivered_id,
                            "oldest_pending_id": g.oldest_pending_id,
                            "oldest_pending_age_s": g.oldest_pending_age_s,
                        }
                        for g in s.groups
                    ],
                }
                for s in self.streams
            ],
            "dlq": {"length": self.dlq_length, "by_group": dict(self.dlq_by_group)},
        }


async def _stream_stats(redis: Redis, stream: str, now: int) -> StreamStats:
    try:
        info: Any = await redis.xinfo_stream(stream)
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key
        return StreamStats(stream, 0, None, None)
    first, last = info.get("first-entry"), info.get("last-entry")
    result = StreamStats(
        stream,
        int(info["length"]),
        as_text(first[0]) if first else None,
        as_text(last[0]) if last else None,
    )
    for group in groups:
        name = as_text(group["name"])
        oldest: str | None = None
        if group["pending"]:
            summary: Any = await redis.xpending(stream, name)
            oldest = as_text(summary["min"]) if summary.get("min") else None
        lag = group.get("lag")
        result.groups.append(
            GroupStats(
                name=name,
                consumers=int(group["consumers"]),
                pending=int(group["pending"]),
                lag=int(lag) if lag is not None else None,
                last_delivered_id=as_text(group["last-delivered-id"]),
                oldest_pending_id=oldest,
                oldest_pending_age_s=max(0, now - id_ms(oldest)) / 1000 if oldest else None,
            )
        )
    return result


async def take_snapshot(redis: Redis, keys: Keys, dlq: DlqDepth | None = None) -> Snapshot:
    now = now_ms()
    streams = [await _stream_stats(redis, stream, now) for stream in keys.event_streams()]
    depth = dlq or DlqDepth(keys.dlq)
    by_group = await depth.refresh(redis)
    return Snapshot(
        streams=streams,
        dlq_length=sum(by_group.values()),
        dlq_by_group=dict(by_group),
        taken_at_ms=now,
    )
