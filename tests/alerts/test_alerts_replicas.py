"""RTT_STORE_REPLICAS covers the alerts' once-records: no replica confirms, nothing is sent.

A claim that only the master holds could be lost in a failover and the alert sent again,
so it counts as Redis being away: the entry is retried (finally dead-lettered), and no
sink, not even the log, gets the alert meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import add_event, running_workers, sink_settings
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, eventually


async def test_an_alert_whose_claim_no_replica_confirms_is_not_sent_but_retried(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    # The test's Valkey has no replica: WAIT 1 answers 0.
    settings = make_settings(
        **sink_settings(sink_servers),
        store_replicas="1",
        store_replicas_timeout="50ms",
        max_deliveries="3",
        retry_base="50ms",
    )
    body = sample_event("stopped", cause="error", call_id="c-1", transcription_id="t-1")
    dlq = Keys(settings.key_prefix).dlq
    async with running_workers(settings, redis):
        await add_event(redis, settings, msgspec.json.encode(body))

        async def dead_lettered() -> bool:
            return bool(await redis.xlen(dlq))

        await eventually(dead_lettered, 20, "the entry dead-lettered after its retries")
    failures = logs.named("handler_failed")
    assert len(failures) == 3, failures
    assert all("RTT_STORE_REPLICAS=1" in line["error"] for line in failures), [
        line["error"] for line in failures
    ]
    assert logs.named("transcription_alert") == []
    for name, server in sink_servers.items():
        assert server.received == [], name
