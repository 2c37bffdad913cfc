"""Alerts consumer throughput, as a ratio to a no-op consumer on the same runtime.

Both drain the same stream through their own consumer group on the same Valkey, in the
same run. Two streams: a realistic mix (every type and cause, one event per
transcription, so about half of the Stopped and Rejected events alert), and a storm
(every event a `connection-error` to one destination: one first alert, the rest grouped).
The figures that matter are the ratios alerts / no-op. Each round also says the CPU time
per event of this process (the worker's runtime and consumer) and of Valkey: on a loaded
machine they show what the work costs when its throughput is set by its share of a core.

    python -m bench alerts            (defaults: 20,000 events, 3 rounds)
    python -m bench alerts --log pipe (log lines to a pipe that `cat` drains, as a stdout
                                       read by a container runtime or journald is)
    python -m bench alerts --collector interleaved
                                      (rounds alternate between Python's collector
                                       settings and the programs' own, `shared.loop`)

It runs as the worker does, on `shared.loop.run`: uvloop, the collector settled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import io
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from redis.asyncio import Redis

from bench._drain import Drained, timed
from rtt.samples import sample_body
from rtt.send import kinds
from shared.embedded import EmbeddedValkey
from shared.entries import StreamEntry
from shared.events import Event
from shared.keys import Keys
from shared.logs import configure_logging
from shared.loop import run, settle_collector
from shared.settings import Settings, load_settings
from worker.alerts import AlertOptions, make_alerts_consumer
from worker.consumers import Consumer, Context, consumer
from worker.runtime import Worker


async def _fill(redis: Redis, stream: str, count: int, storm: bool) -> None:
    rng = random.Random(11)
    plan = kinds("mixed", "mixed", rng)
    for start in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 5000)):
                cause: str | None
                if storm:
                    kind, cause = "realTimeTranscriptionStopped", "connection-error"
                else:
                    kind, cause = next(plan)
                body = sample_body(kind, cause=cause, rng=rng)
                pipe.xadd(
                    stream, StreamEntry(kind, body, int(time.time() * 1000), f"r{n}").to_fields()
                )
            await pipe.execute()


def _noop(group: str) -> Consumer:
    @consumer(group)
    async def noop(event: Event, ctx: Context) -> None:
        return None

    return noop


def _settings(url: str, prefix: str, worker_id: str) -> Settings:
    return load_settings(
        env={},
        overrides={
            "redis_url": url,
            "key_prefix": prefix,
            "block": "100ms",
            "worker_metrics_port": 0,
            "stats_interval": "1h",
            "worker_id": worker_id,
            "alert_group_interval": "1s",
            "alert_rate_min_stops": 1_000_000_000,
        },
    )


async def _drain(url: str, prefix: str, item: Consumer, count: int) -> Drained:
    """One consumer reading the whole stream from the start: its rate and CPU costs."""
    settings = _settings(url, prefix, f"bench-{item.name}")
    redis = Redis.from_url(url)
    stream = Keys(prefix).events()
    worker = Worker(settings, redis, [item])

    async def run() -> None:
        task = asyncio.create_task(worker.run())
        try:
            while True:
                groups: Any = await redis.xinfo_groups(stream)
                info = next((g for g in groups if g["name"] == item.name.encode()), None)
                if info and info["pending"] == 0 and (info.get("entries-read") or 0) >= count:
                    return
                await asyncio.sleep(0.005)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)

    try:
        return await timed(redis, count, run)
    finally:
        await redis.aclose()


_PYTHONS_YOUNG_COLLECTION_EVERY = 700


def _use_collector(mode: str) -> None:
    """`settled` as the programs run (`shared.loop`), or `default` as Python starts."""
    if mode == "settled":
        settle_collector()
    else:
        gc.unfreeze()
        _, middle, old = gc.get_threshold()
        gc.set_threshold(_PYTHONS_YOUNG_COLLECTION_EVERY, middle, old)


def _round_collector(collector: str, n: int) -> str:
    if collector == "interleaved":
        return "default" if n % 2 == 0 else "settled"
    return collector


async def _scenario(
    url: str, prefix: str, events: int, rounds: int, storm: bool, collector: str
) -> list[tuple[str, float, Drained]]:
    redis = Redis.from_url(url)
    await _fill(redis, Keys(prefix).events(), events, storm)
    await redis.aclose()
    results = []
    for n in range(rounds):
        mode = _round_collector(collector, n)
        _use_collector(mode)
        # The alerts consumer keeps its state under the prefix: a fresh prefix per round
        # would need a fresh stream, so each round reads the stream in a new group and
        # the once-records of earlier rounds are cleared first.
        redis = Redis.from_url(url)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*alert*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        noop = await _drain(url, prefix, _noop(f"noop{n}"), events)
        options = AlertOptions.from_settings(_settings(url, prefix, "bench-alerts"))
        alerts_consumer = make_alerts_consumer(options)
        # The runtime names the group after the consumer: rename for a fresh group.
        alerts = await _drain(url, prefix, _renamed(alerts_consumer, f"alerts{n}"), events)
        ratio = alerts.per_s / noop.per_s
        results.append((mode, ratio, alerts))
        print(
            f"  round {n}: no-op {noop.per_s:>8,.0f}/s  alerts {alerts.per_s:>8,.0f}/s  "
            f"ratio {ratio:.2f}  CPU µs/event (worker + Valkey): no-op "
            f"{noop.cpu_us:.0f} + {noop.valkey_us:.0f}, alerts {alerts.cpu_us:.0f} + "
            f"{alerts.valkey_us:.0f}  collector {mode}: gc µs/event no-op "
            f"{noop.gc_us:.1f}, alerts {alerts.gc_us:.1f}"
        )
    return results


def _renamed(item: Consumer, name: str) -> Consumer:
    return dataclasses.replace(item, name=name)


async def _bench(
    events: int, rounds: int, collector: str
) -> dict[str, list[tuple[str, float, Drained]]]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(tmp, appendonly=False) as server:
        print("mix (every type and cause):")
        mix = await _scenario(server.url, "mix", events, rounds, False, collector)
        print("storm (all connection-error to one destination):")
        storm = await _scenario(server.url, "storm", events, rounds, True, collector)
    return {"mix": mix, "storm": storm}


@contextlib.contextmanager
def _pipe() -> Iterator[BinaryIO]:
    read, write = os.pipe()
    drain = subprocess.Popen(["cat"], stdin=read, stdout=subprocess.DEVNULL)
    os.close(read)
    try:
        with os.fdopen(write, "wb") as stream:
            yield stream
    finally:
        drain.wait(10)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench alerts")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log", choices=["memory", "pipe"], default="memory")
    parser.add_argument(
        "--collector", choices=["settled", "default", "interleaved"], default="settled"
    )
    args = parser.parse_args(argv)
    # Every alert is a log line: to memory, so the terminal is not the bottleneck, or to a
    # pipe, whose writes cost a syscall each as a real stdout's do.
    with contextlib.ExitStack() as stack:
        stream: Any = io.BytesIO() if args.log == "memory" else stack.enter_context(_pipe())
        configure_logging(component="bench", level="info", fmt="json", stream=stream)
        # Other benches may follow in this process: stop signals stay as they were.
        results = run(_bench(args.events, args.rounds, args.collector), program_ends=False)
    print(f"events per round {args.events}, rounds {args.rounds}")
    for name, rows in results.items():
        for mode in sorted({mode for mode, _, _ in rows}):
            ratios = [ratio for m, ratio, _ in rows if m == mode]
            alerts = [drained for m, _, drained in rows if m == mode]
            print(
                f"ratio alerts / no-op, {name:<5}  {statistics.median(ratios):.2f} (median), "
                f"collector {mode}: alerts {statistics.median(a.per_s for a in alerts):,.0f}/s, "
                f"CPU {statistics.median(a.cpu_us for a in alerts):.0f} µs/event, "
                f"gc {statistics.median(a.gc_us for a in alerts):.1f} µs/event (medians)"
            )
    return 0
