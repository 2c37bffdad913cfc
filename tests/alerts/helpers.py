"""Run the real worker runtime in-process with fresh alerts consumers, and see what they did."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.sinkserver import SinkServer
from tests.helpers import eventually
from tests.worker.helpers import running_many
from worker.alerts import AlertOptions, make_alerts_consumer
from worker.consumers import Consumer
from worker.runtime import Worker

__all__ = [
    "alerts_consumer",
    "running_workers",
    "settled",
    "sink_settings",
    "wait_handled",
]


async def wait_handled(redis: Redis, settings: Settings, count: int, timeout_s: float = 20) -> None:
    """Until the `alerts` group has read `count` entries and has none pending."""
    stream = Keys(settings.key_prefix).events()

    async def handled() -> bool:
        groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
        info = groups.get(b"alerts")
        return bool(info and info["pending"] == 0 and (info.get("entries-read") or 0) >= count)

    await eventually(handled, timeout_s, f"the alerts group to handle {count} entries")


def alerts_consumer(settings: Settings) -> Consumer:
    """A fresh alerts consumer with the options these settings give it, as `rtt worker`
    builds it."""
    return make_alerts_consumer(AlertOptions.from_settings(settings))


@contextlib.asynccontextmanager
async def running_workers(
    settings: Settings, redis: Redis, count: int = 1
) -> AsyncIterator[list[Worker]]:
    """`count` workers, each with its own alerts consumer and worker id, as replicas are."""
    replicas = [
        settings if count == 1 else _with_worker_id(settings, f"w{n}") for n in range(count)
    ]
    pairs = [(replica, [alerts_consumer(replica)]) for replica in replicas]
    async with running_many(redis, pairs) as workers:
        yield workers


def _with_worker_id(settings: Settings, worker_id: str) -> Settings:
    return msgspec.structs.replace(settings, worker_id=worker_id)


async def settled(redis: Redis, settings: Settings) -> bool:
    """No group window is open and every sink has all of the outbox: nothing more will come."""
    keys = Keys(settings.key_prefix)
    if await redis.zcard(keys.alert_groups_due):
        return False
    last = await redis.xrevrange(keys.alert_outbox, count=1)
    if not last:
        return True
    sinks = 1 + sum(
        bool(url)
        for url in (
            settings.alert_webhook_url,
            settings.alert_slack_webhook_url,
            settings.alert_pagerduty_routing_key,
        )
    )
    cursors = await redis.hvals(keys.alert_cursors)
    return len(cursors) == sinks and all(c == last[0][0] for c in cursors)


def sink_settings(servers: dict[str, SinkServer]) -> dict[str, str]:
    """Settings overrides pointing every sink at its stand-in."""
    return {
        "alert_webhook_url": servers["webhook"].url,
        "alert_slack_webhook_url": servers["slack"].url,
        "alert_pagerduty_routing_key": "R0UTINGKEY0123456789012345678901",
        "alert_pagerduty_url": servers["pagerduty"].url,
    }
