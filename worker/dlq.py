"""The dead-letter stream `rtt:dlq`: what a dead letter holds, and how one is written,
listed, re-driven and purged."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from shared.entries import Fields, StreamEntry

__all__ = [
    "DeadLetter",
    "DlqDepth",
    "dead_letter",
    "delete",
    "read",
    "read_all",
    "replay",
]

# Enough of a traceback's last line to act on; a whole one would bloat the stream.
_ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry that exhausted its deliveries in one consumer group, and why."""

    stream: str
    original_id: str
    group: str
    worker_id: str  # the member of the group that gave up on it
    error: str
    attempts: int
    entry: StreamEntry
    failed_at_ms: int
    id: str = ""  # its own id on rtt:dlq, once read back

    def to_fields(self) -> Fields:
        return {
            "stream": self.stream,
            "id": self.original_id,
            "group": self.group,
            # Stored as "consumer" (the group member, in Redis's words); kept for old entries.
            "consumer": self.worker_id,
            "error": self.error[:_ERROR_MAX_CHARS],
            "attempts": self.attempts,
            "failed_at": self.failed_at_ms,
            "type": self.entry.type,
            "body": self.entry.body,
            "received_at": self.entry.received_at_ms,
            "request_id": self.entry.request_id,
        }

    @classmethod
    def from_fields(cls, dlq_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
        text = {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k != b"body"}
        return cls(
            stream=text.get("stream", ""),
            original_id=text.get("id", ""),
            group=text.get("group", ""),
            worker_id=text.get("consumer", ""),
            error=text.get("error", ""),
            attempts=int(text.get("attempts", "0")),
            entry=StreamEntry(
                type=text.get("type", ""),
                body=fields.get(b"body", b""),
                received_at_ms=int(text.get("received_at", "0")),
                request_id=text.get("request_id", ""),
            ),
            failed_at_ms=int(text.get("failed_at", "0")),
            id=dlq_id,
        )


def _atomic(redis: Redis) -> bool:
    # On a cluster the DLQ and the event streams live in different slots, where MULTI
    # cannot span them; there the write comes first, so a crash duplicates, never loses.
    return not isinstance(redis, RedisCluster)


async def dead_letter(redis: Redis, dlq_key: str, letter: DeadLetter, max_len: int) -> None:
    """Add `letter` to the DLQ and acknowledge the original entry, in one transaction."""
    async with redis.pipeline(transaction=_atomic(redis)) as pipe:
        pipe.xadd(dlq_key, letter.to_fields(), maxlen=max_len, approximate=True)
        pipe.xack(letter.stream, letter.group, letter.original_id)
        await pipe.execute()


async def read(redis: Redis, dlq_key: str, ids: list[str]) -> list[DeadLetter]:
    """The dead letters with these DLQ ids that still exist, in the order given."""
    found: list[DeadLetter] = []
    for dlq_id in ids:
        rows: Any = await redis.xrange(dlq_key, dlq_id, dlq_id)
        found.extend(DeadLetter.from_fields(i.decode(), f) for i, f in rows)
    return found


async def read_all(
    redis: Redis, dlq_key: str, *, group: str | None = None, limit: int | None = None
) -> list[DeadLetter]:
    """Dead letters oldest first, optionally of one group, at most `limit` of them."""
    result: list[DeadLetter] = []
    start = "-"
    while limit is None or len(result) < limit:
        rows: Any = await redis.xrange(dlq_key, start, "+", count=500)
        if not rows:
            break
        for raw_id, fields in rows:
            letter = DeadLetter.from_fields(raw_id.decode(), fields)
            if group is None or letter.group == group:
                result.append(letter)
        start = "(" + rows[-1][0].decode()
    return result[:limit] if limit is not None else result


async def replay(redis: Redis, dlq_key: str, letters: list[DeadLetter]) -> list[str]:
    """Put each letter back on its stream for its group only; return the new entry ids.

    The new entry carries `group`, so the other consumer groups, which handled the event
    the first time, acknowledge it without handling it again.
    """
    new_ids = []
    for letter in letters:
        entry = StreamEntry(
            type=letter.entry.type,
            body=letter.entry.body,
            received_at_ms=letter.entry.received_at_ms,
            request_id=letter.entry.request_id,
            group=letter.group,
        )
        async with redis.pipeline(transaction=_atomic(redis)) as pipe:
            pipe.xadd(letter.stream, entry.to_fields())
            pipe.xdel(dlq_key, letter.id)
            added, _ = await pipe.execute()
        new_ids.append(added.decode() if isinstance(added, bytes) else str(added))
    return new_ids


async def delete(redis: Redis, dlq_key: str, letters: list[DeadLetter]) -> int:
    if not letters:
        return 0
    return int(await redis.xdel(dlq_key, *[letter.id for letter in letters]))


class DlqDepth:
    """Dead letters per group, kept current by reading only what was added since last time.

    Counting by group means reading the entries. `entries-added` tells whether anything was
    removed (replay, purge, the length cap) since the last count; only then is everything
    read again, which happens when an operator acts, not at every refresh.
    """

    def __init__(self, dlq_key: str) -> None:
        self.dlq_key = dlq_key
        self.by_group: Counter[str] = Counter()
        self._last: bytes | None = None
        self._length = 0
        self._added = 0
        # A scrape and the stats loop may refresh at once; each must see the other's count.
        self._lock = asyncio.Lock()

    async def refresh(self, redis: Redis) -> Counter[str]:
        async with self._lock:
            return await self._refresh(redis)

    async def _refresh(self, redis: Redis) -> Counter[str]:
        try:
            info: Any = await redis.xinfo_stream(self.dlq_key)
        except ResponseError:  # no such key: nothing was ever dead-lettered
            self.by_group, self._last, self._length, self._added = Counter(), None, 0, 0
            return self.by_group
        length, added = int(info["length"]), int(info.get("entries-added") or 0)
        if added - self._added != length - self._length or added < self._added:
            self.by_group, self._last = Counter(), None
        start = "-" if self._last is None else "(" + self._last.decode()
        end = info["last-generated-id"]
        while True:
            rows: Any = await redis.xrange(self.dlq_key, start, end, count=1000)
            for raw_id, fields in rows:
                self.by_group[fields.get(b"group", b"").decode()] += 1
                self._last = raw_id
            if len(rows) < 1000:
                break
            start = "(" + rows[-1][0].decode()
        self._length, self._added = length, added
        return self.by_group
