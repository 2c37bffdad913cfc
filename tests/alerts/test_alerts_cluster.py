"""The alerts consumer's batch on a Redis Cluster: its once-records span hash slots (each
alert's own), its stale and group state is in the alerts' slot; each alert once, twice
read or not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.connections import create_redis
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, wait_handled
from tests.bodies import sample_body
from tests.cluster import EmbeddedCluster
from tests.helpers import LogLines, add_events

pytestmark = pytest.mark.slow


async def test_a_batch_spanning_slots_logs_each_alert_once_and_tracks_its_starts(
    make_settings: Callable[..., Settings], cluster: EmbeddedCluster, logs: LogLines
) -> None:
    settings = make_settings(redis_url=cluster.url, alert_rate_min_stops=1_000_000)
    redis = create_redis(settings)
    keys = Keys(settings.key_prefix)
    try:
        bodies = [
            sample_body("stopped", cause="error", call_id=f"c-{n}", transcription_id=f"t-{n}")
            for n in range(12)
        ]
        starts = [
            sample_body("started", call_id=f"c-s{n}", transcription_id=f"t-s{n}") for n in range(3)
        ]
        # One batch, every alert in it twice (a redelivery in the same read).
        await add_events(redis, settings, *bodies, *starts, *bodies)
        async with running_workers(settings, redis):
            await wait_handled(redis, settings, 27, timeout_s=60)
        slots = {redis.keyslot(keys.alert_once("log", f"k{n}")) for n in range(12)}
        assert len(slots) > 1
        lines = logs.named("transcription_alert")
        assert sorted(line["transcription_id"] for line in lines) == sorted(
            f"t-{n}" for n in range(12)
        )
        assert await redis.zcard(keys.alert_open_due) == 3
    finally:
        await redis.aclose()
