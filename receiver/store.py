"""The store path: where an accepted body goes before the receiver may answer 204."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from redis.asyncio import Redis

from shared.entries import Fields

__all__ = ["Outcome", "Store", "StoreItem", "StoreUnavailable"]


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    SPOOLED = "spooled"


class StoreUnavailable(Exception):
    """Neither Redis nor the spool took the item: the caller answers 503."""


@dataclass(frozen=True, slots=True)
class StoreItem:
    stream: str
    fields: Fields
    # Set for events: a repeat inside the dedup window is not stored again.
    dedup_key: str | None = None
    # Set for bounded forensic streams only; rtt:events is never trimmed at XADD time.
    max_len: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Store:
    """Stores items on Redis, one XADD per item."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def mode(self) -> str:
        """`redis`, `spool` or `unavailable`, for /readyz."""
        return "redis"

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def put(self, item: StoreItem) -> Outcome:
        try:
            await self._redis.xadd(
                item.stream, item.fields, maxlen=item.max_len, approximate=item.max_len is not None
            )
        except Exception as exc:
            raise StoreUnavailable(str(exc)) from exc
        return Outcome.STORED
