"""The long alert scenarios (`make test-reliability`): the fast ones at full size, and a
kill storm. Each accounts by alert key and prints the ids that differ."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from shared.entries import StreamEntry
from shared.keys import Keys
from shared.settings import Settings, load_settings
from tests.alerts.helpers import settled, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, eventually
from tests.processes import Program, start_worker
from tests.reliability.test_alerts_redis_blip import blip_run
from tests.reliability.test_alerts_throttled import throttled_run
from tests.worker.helpers import worker_env

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(900)]


@pytest.mark.parametrize("retry_after_s", [30, 60])
async def test_one_429_over_300_alerts_dead_letters_none(
    make_settings: Callable[..., Settings], redis: Redis, retry_after_s: int
) -> None:
    # The worker's own retry settings, as shipped.
    await throttled_run(make_settings, redis, alerts=300, retry_after_s=retry_after_s)


async def test_a_redis_outage_over_300_alerts_sends_nothing_twice(
    make_settings: Callable[..., Settings], tmp_path: Path, logs: LogLines
) -> None:
    await blip_run(make_settings, tmp_path, logs, alerts=300)


STORM_S = 50.0
EVENTS = 20_000
FAIL_EVERY = 10  # one event in ten is a failure, each to its own host: its own first alert
WORKERS = 3
SINK_DELAY_S = 0.05  # a sink that takes a moment, as real ones do: sends are in flight
COPY_WITHIN_S = 15.0  # a copy follows its worker's death by about the heartbeat TTL (1 s)


def _entry(n: int) -> dict[bytes | str, Any]:
    failed = n % FAIL_EVERY == 0
    body = sample_event(
        "stopped",
        cause="error" if failed else "closed",
        call_id=f"c-{n}",
        transcription_id=f"t-{n}",
        destination=f"wss://d{n}.example.com/live",
    )
    entry = StreamEntry(
        "realTimeTranscriptionStopped", msgspec.json.encode(body), int(time.time() * 1000), f"r{n}"
    )
    return dict(entry.to_fields())


async def _feed(redis: Redis, stream: str, duration_s: float) -> None:
    """EVENTS events at a steady rate over `duration_s`, ten batches a second."""
    batches = int(duration_s * 10)
    per_batch = -(-EVENTS // batches)
    for start in range(0, EVENTS, per_batch):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(EVENTS, start + per_batch)):
                pipe.xadd(stream, _entry(n))
            await pipe.execute()
        await asyncio.sleep(0.1)


async def test_a_kill_storm_loses_no_alert_and_every_copy_folds_by_its_key(
    redis_url: str, prefix: str, redis: Redis, tmp_path: Path
) -> None:
    webhook = SinkServer(delay_s=SINK_DELAY_S)
    await webhook.start()
    env = worker_env(
        redis_url,
        prefix,
        alert_webhook_url=webhook.url,
        alert_group_interval="500ms",
        alert_rate_min_stops="1000000",
        batch_size="50",
    )
    settings = load_settings(env=env)
    names = [f"w{n}" for n in range(WORKERS)]
    running: dict[str, Program] = {}
    every: list[Program] = []

    def start(name: str) -> None:
        program = start_worker(env, tmp_path / f"{name}-{len(every)}.log", worker_id=name)
        running[name] = program
        every.append(program)

    rng = random.Random(20261201)
    kills: list[float] = []
    try:
        for name in names:
            start(name)
        for program in every:
            await eventually(lambda p=program: p.named("alert_sinks"), 30, "workers up")
        feeder = asyncio.create_task(_feed(redis, Keys(prefix).events(), STORM_S - 5))
        began = time.monotonic()
        while time.monotonic() - began < STORM_S:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            name = rng.choice(names)
            running[name].send(signal.SIGKILL)
            kills.append(time.monotonic())
            await asyncio.to_thread(running[name].stop)
            start(name)  # under the same worker id, as a supervisor restarts it
        await feeder
        await wait_handled(redis, settings, EVENTS, timeout_s=300)
        await eventually(lambda: settled(redis, settings), 120, "outbox delivered")
        dead = await redis.xlen(Keys(prefix).dlq)
    finally:
        codes = await asyncio.gather(
            *(asyncio.to_thread(p.stop, signal.SIGTERM, 30.0) for p in running.values())
        )
        await webhook.stop()
    assert set(codes) == {0}, [p.text()[-2000:] for p in running.values()]

    expected = {f"c-{n}" for n in range(0, EVENTS, FAIL_EVERY)}
    alerted = {line["call_id"] for p in every for line in p.named("transcription_alert")}
    copies: dict[str, list[float]] = {}
    for r in webhook.received:
        if 200 <= r.status < 300:
            copies.setdefault(r.json()["call_id"], []).append(r.at)
    posted = set(copies)
    twice = {call: times for call, times in copies.items() if len(times) > 1}
    delays = [times[1] - times[0] for times in twice.values()]
    # A duplicate's first copy reached the sink just before its worker was killed.
    near_kill = {
        call: min((k - times[0] for k in kills if k >= times[0]), default=float("inf"))
        for call, times in twice.items()
    }
    per_key = webhook.accepted_per_key()
    print(
        f"\nkill storm: {len(kills)} SIGKILLs of {WORKERS} workers in {STORM_S:.0f}s, "
        f"{EVENTS} events, {len(expected)} alerts: handled all; alerted (log) "
        f"{len(alerted)}; posted {sum(len(t) for t in copies.values())} requests for "
        f"{len(posted)} alerts; missing {sorted(expected - posted)}; unexpected "
        f"{sorted(posted - expected)}; posted twice {len(twice)} {sorted(twice)}; copy "
        f"after first: "
        + (
            f"min {min(delays):.2f}s median {statistics.median(delays):.2f}s max {max(delays):.2f}s"
            if delays
            else "-"
        )
        + f"; first copy before its kill at most {max(near_kill.values(), default=0):.2f}s; "
        f"distinct Idempotency-Keys {len(per_key)}; dead-lettered {dead}"
    )
    assert dead == 0
    assert posted == expected
    assert alerted == expected
    # A receiver folding repeated keys keeps exactly one of each.
    assert len(per_key) == len(expected)
    assert all(len(times) <= 2 for times in twice.values()), twice
    assert all(delay < COPY_WITHIN_S for delay in delays), delays
    assert all(gap < 5.0 for gap in near_kill.values()), near_kill
