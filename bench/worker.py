"""Worker throughput: the runtime with a no-op consumer against a raw redis-py loop.

Both drain the same stream of real event bodies through their own consumer group on the
same Valkey. The raw loop is the floor of what any consumer-group worker pays: XREADGROUP
of 500, msgspec decode of each body, one XACK per batch. The figure that matters is the
ratio runtime / raw (goal: 0.8 or more).

    python -m bench worker            (defaults: 100,000 events, 5 rounds)
    python -c 'import bench.worker as b; b.main(["--events", "200000"])'
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import tempfile
import time
from typing import Any

from redis.asyncio import Redis

from rtt.samples import CAUSES, TYPE_BY_SHORT_NAME, sample_body
from shared.embedded import EmbeddedValkey
from shared.entries import StreamEntry
from shared.events import Event, decode_event
from shared.keys import Keys
from shared.logs import configure_logging
from shared.settings import load_settings
from worker.consumers import Context, consumer
from worker.runtime import Worker

BATCH = 500


async def _fill(redis: Redis, stream: str, count: int) -> None:
    rng = random.Random(7)
    kinds = list(TYPE_BY_SHORT_NAME.values())
    bodies = []
    for _ in range(256):
        kind = rng.choice(kinds)
        cause = rng.choice(CAUSES[kind]) if kind in CAUSES else None
        bodies.append((kind, sample_body(kind, cause=cause, rng=rng)))
    for start in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 5000)):
                kind, body = bodies[n % len(bodies)]
                pipe.xadd(stream, StreamEntry(kind, body, n, f"r{n}").to_fields())
            await pipe.execute()


async def _raw(redis: Redis, stream: str, group: str, count: int) -> float:
    await redis.xgroup_create(stream, group, id="0")
    done = 0
    started = time.perf_counter()
    while done < count:
        reply: Any = await redis.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        for _, fields in entries:
            decode_event(fields[b"body"])
        await redis.xack(stream, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    return count / (time.perf_counter() - started)


async def _runtime(url: str, prefix: str, group: str, count: int) -> float:
    settings = load_settings(
        env={},
        overrides={
            "redis_url": url,
            "key_prefix": prefix,
            "block": "100ms",
            "worker_metrics_port": 0,
            "stats_interval": "1h",
            "worker_id": "bench",
        },
    )
    handled = 0
    all_handled = asyncio.Event()

    @consumer(group)
    async def noop(event: Event, ctx: Context) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            all_handled.set()

    redis = Redis.from_url(url)
    stream = Keys(prefix).events()
    worker = Worker(settings, redis, [noop])
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(all_handled.wait(), 600)
        while True:  # until the last acknowledgement is in
            groups: Any = await redis.xinfo_groups(stream)
            if any(g["name"] == group.encode() and g["pending"] == 0 for g in groups):
                break
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await redis.aclose()
    return count / elapsed


async def _bench(events: int, rounds: int) -> tuple[list[float], list[float]]:
    raw_rates: list[float] = []
    runtime_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(tmp, appendonly=False) as server:
        redis = Redis.from_url(server.url)
        prefix = "bench"
        stream = Keys(prefix).events()
        await _fill(redis, stream, events)
        for n in range(rounds):
            # Alternate which goes first so neither always gets the warmer server.
            order = ["raw", "runtime"] if n % 2 == 0 else ["runtime", "raw"]
            for which in order:
                if which == "raw":
                    raw_rates.append(await _raw(redis, stream, f"raw{n}", events))
                else:
                    runtime_rates.append(await _runtime(server.url, prefix, f"rt{n}", events))
        await redis.aclose()
    return raw_rates, runtime_rates


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench worker")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    # The runtime logs a line or two per round; keep them out of the report.
    configure_logging(component="bench", level="warning", fmt="json", stream=io.StringIO())
    raw_rates, runtime_rates = asyncio.run(_bench(args.events, args.rounds))
    # Each round runs both back to back, so the per-round ratio cancels the drifts of a
    # shared machine; the median of those ratios is the figure reported.
    ratios = [rt / raw for raw, rt in zip(raw_rates, runtime_rates, strict=True)]
    print(f"events per round      {args.events}, rounds {args.rounds}, batch {BATCH}")
    print(f"raw redis-py loop     {statistics.median(raw_rates):>10,.0f} events/s (median)")
    print(f"runtime, no-op        {statistics.median(runtime_rates):>10,.0f} events/s (median)")
    print(f"ratio per round       {' '.join(f'{r:.2f}' for r in ratios)}")
    print(f"ratio runtime / raw   {statistics.median(ratios):.2f}  (goal >= 0.80)")
    return 0
