"""The batch forms of the alert scripts: one call for a batch does what a call per event did."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from shared.events import Started, decode_event
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_body
from tests.helpers import LogLines, add_events, eventually
from worker.alerts import AlertOptions
from worker.alerts.grouping import Groups, decision_of, group_id
from worker.alerts.pipelined import run
from worker.alerts.rules import Alert, alert_for, group_labels
from worker.alerts.stale import stale_alert

# Failures to two hosts, errors and warnings, some alerts twice (a redelivery).
_KINDS = [
    ("stopped", "connection-error"),
    ("stopped", "error"),
    ("rejected", "duplicate"),
    ("rejected", "track-limit"),
]


def _alerts(options: AlertOptions, count: int, seed: int) -> list[Alert]:
    rng = random.Random(seed)
    alerts: list[Alert] = []
    for n in range(count):
        if alerts and rng.random() < 0.2:
            alerts.append(rng.choice(alerts))
            continue
        kind, cause = rng.choice(_KINDS)
        host = rng.choice(["a.example.com", "b.example.com"])
        body = sample_body(
            kind, cause=cause, transcription_id=f"t-{seed}-{n}", destination=f"wss://{host}/x"
        )
        alert = alert_for(decode_event(body), options)  # type: ignore[arg-type]
        assert alert is not None
        alerts.append(alert)
    return alerts


async def _group_state(redis: Redis, keys: Keys, alerts: list[Alert], by: list[str]) -> Any:
    gids = sorted({group_id(group_labels(a, by)) for a in alerts})
    groups = []
    for gid in gids:
        fields = await redis.hgetall(keys.alert_group(gid))
        for moment in (b"open_until", b"window_start"):  # their clocks differ
            fields.pop(moment, None)
        examples = await redis.lrange(keys.alert_group_examples(gid), 0, -1)
        due = await redis.zscore(keys.alert_groups_due, gid) is not None
        groups.append((fields, examples, due))
    seen = [await redis.get(keys.alert_seen(a.alert_key)) for a in alerts]
    return groups, seen


async def test_a_batch_registered_at_once_decides_as_one_alert_at_a_time(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    # Grouped by host alone, so a group holds errors and warnings.
    settings = make_settings(alert_group_by="destination_host")
    options = AlertOptions.from_settings(settings)
    alone = Keys(f"{prefix}-alone")
    batched = Keys(f"{prefix}-batched")
    one_by_one = Groups(redis, alone, options)
    many = Groups(redis, batched, options)
    every: list[str] = []
    # The second batch finds the groups open, their examples partly taken.
    for seed, count in ((1, 3), (2, 40)):
        alerts = _alerts(options, count, seed)
        expected = [await one_by_one.register(a) for a in alerts]
        every += expected
        [decisions] = await run(redis, [many.register_many_call(alerts)])
        assert [decision_of(d) for d in decisions] == expected
        assert await _group_state(redis, batched, alerts, ["destination_host"]) == (
            await _group_state(redis, alone, alerts, ["destination_host"])
        )
    assert "first" in every
    assert "grouped" in every


async def test_a_batch_holding_an_alert_twice_logs_and_sends_it_once(
    make_settings: Callable[..., Settings],
    redis: Redis,
    logs: LogLines,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = make_settings(
        alert_group_interval="200ms", alert_rate_min_stops=1_000_000, **sink_settings(sink_servers)
    )
    first = sample_body("stopped", cause="error", call_id="c-1", transcription_id="t-1")
    second = sample_body("stopped", cause="error", call_id="c-2", transcription_id="t-2")
    # In the stream before the worker starts: one batch, the first alert in it twice.
    await add_events(redis, settings, first, first, second, first)
    async with running_workers(settings, redis):
        await wait_handled(redis, settings, 4)
        webhook = sink_servers["webhook"]

        def summaries() -> list[dict[str, Any]]:
            return [b for b in webhook.accepted if b.get("kind") == "summary"]

        await eventually(summaries, what="the summary of the second alert")
    lines = logs.named("transcription_alert")
    assert sorted(line["transcription_id"] for line in lines) == ["t-1", "t-2"]
    alerts = [b for b in webhook.accepted if b.get("kind") == "alert"]
    assert [a["transcription_id"] for a in alerts] == ["t-1"]
    [summary] = summaries()
    assert summary["count"] == 1
    assert [e["transcription_id"] for e in summary["examples"]] == ["t-2"]


def _started(n: int) -> bytes:
    return sample_body("started", call_id=f"c-{n}", transcription_id=f"t-{n}")


def _stopped(n: int) -> bytes:
    return sample_body("stopped", cause="closed", call_id=f"c-{n}", transcription_id=f"t-{n}")


def _stale(server: SinkServer) -> list[dict[str, Any]]:
    return [b for b in server.accepted if b.get("kind") == "alert" and b["cause"] == "stale"]


async def test_a_start_and_its_stop_in_one_batch_open_nothing_in_either_order(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
) -> None:
    settings = make_settings(
        alert_stale_after="1s",
        alert_group_interval="200ms",
        alert_group_by="transcription_id",
        alert_rate_min_stops=1_000_000,
        **sink_settings(sink_servers),
    )
    # One batch: 1 starts and stops, 2 stops then (a late retry) starts, 3 only starts.
    await add_events(
        redis, settings, _started(1), _stopped(1), _stopped(2), _started(2), _started(3)
    )
    webhook = sink_servers["webhook"]
    async with running_workers(settings, redis):
        await wait_handled(redis, settings, 5)
        await eventually(lambda: _stale(webhook), what="transcription 3's stale alert")
    assert [a["transcription_id"] for a in _stale(webhook)] == ["t-3"]


@pytest.mark.parametrize("layout", ["alert", "started's fields"])
async def test_an_open_record_of_either_layout_raises_the_same_stale_alert(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    layout: str,
) -> None:
    """A worker before this one left the alert itself as the open record: after an upgrade
    it is raised all the same, as is the record this one leaves."""
    settings = make_settings(
        alert_stale_after="1s",
        alert_group_interval="200ms",
        alert_rate_min_stops=1_000_000,
        **sink_settings(sink_servers),
    )
    # One body for both: sample_body stamps eventTime with the clock, to the millisecond.
    body = _started(7)
    started = decode_event(body)
    assert isinstance(started, Started)
    expected = stale_alert(started, timedelta(seconds=1))
    keys = Keys(settings.key_prefix)
    if layout == "alert":
        await redis.set(keys.alert_open("t-7"), msgspec.json.encode(expected), px=60_000)
        await redis.zadd(keys.alert_open_due, {"t-7": 0})
    else:
        await add_events(redis, settings, body)
    webhook = sink_servers["webhook"]
    async with running_workers(settings, redis):
        await eventually(lambda: _stale(webhook), what="the stale alert")
    [alert] = _stale(webhook)
    assert alert == msgspec.to_builtins(expected)
