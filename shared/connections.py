"""Redis connections: one factory for plain, TLS, Sentinel and Cluster URLs."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .settings import Settings

__all__ = ["REDIS_DOWN", "create_redis"]

# What redis-py raises when the server is down, unreachable or too slow (OSError: a socket
# error it did not wrap), as opposed to a reply it refused.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def create_redis(settings: Settings, *, url: str | None = None) -> Redis:
    """Open a client for `url` (default `settings.redis_url`).

    redis-py sets a 5 s socket timeout by default and does not extend it for a blocking
    XREADGROUP (redis-py #2807), so the read timeout is set on purpose, above `block`.
    """
    url = url or settings.redis_url
    if not url:
        raise ValueError("no Redis URL: set RTT_REDIS_URL")
    read_timeout_s = max(settings.redis_timeout.total_seconds(), settings.block.total_seconds() + 5)
    common: dict[str, Any] = {
        "socket_timeout": read_timeout_s,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 15,
    }
    parts = urlsplit(url)
    if parts.scheme == "redis+cluster":
        cluster = RedisCluster.from_url("redis://" + parts.netloc + parts.path, **common)
        # Cluster and single-node clients share the command API used here.
        return cast(Redis, cluster)
    if parts.scheme in {"redis+sentinel", "rediss+sentinel"}:
        hosts = []
        for hostport in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = hostport.partition(":")
            hosts.append((host, int(port or 26379)))
        path = parts.path.strip("/").split("/")
        master = path[0] if path and path[0] else "mymaster"
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            password=parts.password,
            ssl=parts.scheme.startswith("rediss"),
            db=db,
            **common,
        )
        return cast(Redis, sentinel.master_for(master))
    return Redis.from_url(url, **common)
