"""When `rtt serve` may say it runs: the receiver answers `/readyz`, the worker consumes.

The worker's signal is what Redis already knows, so the worker needs no extra channel:
the heartbeat key of the `alerts` group holds a token of the worker's pid (it has taken
its worker id), and the group lists the worker as a consumer (its readers have started).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from shared.connections import create_redis
from shared.keys import Keys
from shared.logs import get_logger
from shared.redis_values import as_text
from shared.settings import Settings
from worker.heartbeat import holder_prefix
from worker.runtime import default_worker_id

__all__ = ["Readiness"]

log = get_logger()
# The built-in consumer's group: every worker runs it, whatever else it loads.
_GROUP = "alerts"
_POLL_S = 0.1
# After this long without both answers, say what is still missing (once).
_SLOW_START_S = 20.0


class Readiness:
    def __init__(self, settings: Settings, redis_url: str) -> None:
        """Raises ValueError for a Redis URL that cannot be used, before anything starts."""
        self.settings = settings
        self.redis = create_redis(settings, url=redis_url)
        self.worker_pid = 0
        self.worker_id = ""
        self.keys = Keys(settings.key_prefix, settings.shards)
        host = settings.host
        if host in {"0.0.0.0", ""}:
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        shown = f"[{host}]" if ":" in host else host
        self.readyz_url = f"http://{shown}:{settings.port}/readyz"
        self.receiver_ready = False
        self.worker_consuming = False

    async def wait(self, worker_pid: int, keep_waiting: Callable[[], bool]) -> bool:
        """True once both are up; False if `keep_waiting()` turns false first."""
        self.worker_pid = worker_pid
        self.worker_id = self.settings.worker_id or default_worker_id(worker_pid)
        redis = self.redis
        loop = asyncio.get_running_loop()
        started = loop.time()
        reported = False
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                while keep_waiting():
                    if not self.receiver_ready:
                        self.receiver_ready = await self._receiver_ready(http)
                    if not self.worker_consuming:
                        self.worker_consuming = await self._worker_consuming(redis)
                    if self.receiver_ready and self.worker_consuming:
                        return True
                    if not reported and loop.time() - started > _SLOW_START_S:
                        reported = True
                        log.warning(
                            "serve_still_starting",
                            receiver_ready=self.receiver_ready,
                            readyz=self.readyz_url,
                            worker_consuming=self.worker_consuming,
                            worker_id=self.worker_id,
                        )
                    await asyncio.sleep(_POLL_S)
        finally:
            await redis.aclose()
        return False

    async def _receiver_ready(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(self.readyz_url) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _worker_consuming(self, redis: Any) -> bool:
        group = _GROUP
        try:
            holder = await redis.get(self.keys.heartbeat(group, self.worker_id))
            if holder is None or not as_text(holder).startswith(holder_prefix(self.worker_pid)):
                return False
            consumers = await redis.xinfo_consumers(self.keys.events(0), group)
        except (RedisError, OSError):
            return False  # no group yet (NOGROUP), or Redis not there yet
        return any(as_text(item.get("name", b"")) == self.worker_id for item in consumers)
