"""RTT_STORE_REPLICAS for the worker's writes: WAIT after them, and what too few means.

The receiver ends each flush with this WAIT (receiver/batching.py, which fails its items
its own way); the worker's alert records and acknowledgements end their pipeline with it
on the same connection, and count as written only once that many replicas confirmed
them. On a cluster the worker's writes do not wait.
"""

from __future__ import annotations

import msgspec
from redis.exceptions import RedisError

from shared.settings import Settings

__all__ = ["NotReplicated", "Wait", "confirm", "wait_of"]


class Wait(msgspec.Struct, frozen=True):
    """How many replicas must confirm a pipeline's writes, and how long to wait for them."""

    replicas: int
    timeout_ms: int

    def command(self) -> tuple[str, int, int]:
        return ("WAIT", self.replicas, max(1, self.timeout_ms))


class NotReplicated(RedisError):
    """Written on the master, but fewer replicas than asked confirmed it in time: a
    failover may lose it, so it does not count as written (as if Redis were away)."""


def wait_of(settings: Settings) -> Wait | None:
    """The WAIT that RTT_STORE_REPLICAS asks for; None when it is 0."""
    if not settings.store_replicas:
        return None
    return Wait(
        settings.store_replicas, int(settings.store_replicas_timeout.total_seconds() * 1000)
    )


def confirm(confirmed: object, wait: Wait, what: str) -> None:
    """Raise NotReplicated unless WAIT's reply says enough replicas have `what`."""
    if isinstance(confirmed, Exception) or int(str(confirmed)) < wait.replicas:
        raise NotReplicated(
            f"{what}: {confirmed!r} of RTT_STORE_REPLICAS={wait.replicas} replicas confirmed"
            f" within RTT_STORE_REPLICAS_TIMEOUT ({wait.timeout_ms} ms)"
        )
