"""RTT_STORE_REPLICAS covers the alerts' once-records: no replica confirms, nothing is sent.

A claim that only the master holds could be lost in a failover and the alert sent again,
so it counts as Redis being away: the entry is retried, without spending its deliveries
(it is never dead-lettered for it), and no sink, not even the log, gets the alert
meanwhile. Once a replica confirms, the alert goes out once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from shared.embedded import EmbeddedValkey
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, sink_settings
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import pending_ids


@pytest.fixture
async def lone_master(tmp_path: Path) -> AsyncIterator[EmbeddedValkey]:
    """A Valkey of this test's own, with no replica until the test starts one."""
    with EmbeddedValkey(tmp_path / "master", appendonly=False) as master:
        yield master


async def test_an_alert_no_replica_confirms_waits_for_one_and_is_never_dead_lettered(
    make_settings: Callable[..., Settings],
    lone_master: EmbeddedValkey,
    tmp_path: Path,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    settings = make_settings(
        **sink_settings(sink_servers),
        redis_url=lone_master.url,
        store_replicas="1",
        store_replicas_timeout="50ms",
        max_deliveries="3",
        retry_base="50ms",
    )
    body = sample_event("stopped", cause="error", call_id="c-1", transcription_id="t-1")
    keys = Keys(settings.key_prefix)
    redis = Redis.from_url(lone_master.url)
    try:
        async with running_workers(settings, redis):
            [entry_id] = await add_events(redis, settings, msgspec.json.encode(body))

            async def retried_past_max_deliveries() -> bool:
                return len(logs.named("handler_failed")) > 2 * settings.max_deliveries

            await eventually(retried_past_max_deliveries, 20, "the entry retried")
            assert await redis.xlen(keys.dlq) == 0
            assert await pending_ids(redis, keys.events(), "alerts") == [entry_id]
            assert logs.named("transcription_alert") == []
            for name, server in sink_servers.items():
                assert server.received == [], name

            replica_args = ["--replicaof", "127.0.0.1", str(lone_master.port)]
            with EmbeddedValkey(tmp_path / "replica", appendonly=False, extra_args=replica_args):

                async def settled() -> bool:
                    return await pending_ids(redis, keys.events(), "alerts") == []

                await eventually(settled, 20, "the alert sent once a replica confirms")
        failures = logs.named("handler_failed")
        assert all("RTT_STORE_REPLICAS=1" in line["error"] for line in failures), failures
        # Redis away spends no delivery: each retry is the same delivery again.
        assert {line["deliveries"] for line in failures} == {1}
        assert await redis.xlen(keys.dlq) == 0
        assert len(logs.named("transcription_alert")) == 1
        for name, server in sink_servers.items():
            assert len(server.received) == 1, name
    finally:
        await redis.aclose()
