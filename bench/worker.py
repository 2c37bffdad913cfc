"""Worker throughput: the runtime with a no-op consumer, and FastStream's Redis Streams
subscriber, against a raw redis-py loop.

Each drains the same stream of real event bodies through its own consumer group on the
same Valkey, rounds interleaved. The raw loop is the floor of what any consumer-group
worker pays: XREADGROUP of 500, msgspec decode of each body, one XACK per batch. The
runtime runs a no-op consumer; FastStream (with the `bench` extra) a no-op handler that
decodes the body with msgspec, in a group, each message acknowledged after it. The figures
that matter are the ratios to raw of the same round (goal for the runtime: 0.8 or more),
and the CPU time per event of this process and of Valkey. Every variant must have read
exactly N entries and left none pending, or the run fails.

    python -m bench worker            (defaults: 100,000 events, 5 rounds)
    python -m bench worker --events 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import tempfile
from typing import Any

from redis.asyncio import Redis

from bench._drain import Drained, timed
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


async def _group(redis: Redis, stream: str, group: str) -> dict[Any, Any]:
    groups: Any = await redis.xinfo_groups(stream)
    return next(g for g in groups if g["name"] == group.encode())


async def _until_acked(redis: Redis, stream: str, group: str) -> None:
    """Return once `group` has nothing pending: the last acknowledgement is in."""
    while True:
        if not (await _group(redis, stream, group))["pending"]:
            return
        await asyncio.sleep(0.001)


async def _raw(redis: Redis, stream: str, group: str, count: int) -> tuple[Drained, int]:
    await redis.xgroup_create(stream, group, id="0")
    done = 0

    async def run() -> None:
        nonlocal done
        while done < count:
            reply: Any = await redis.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=100)
            if not reply:
                continue
            entries = reply[0][1]
            for _, fields in entries:
                decode_event(fields[b"body"])
            await redis.xack(stream, group, *[entry_id for entry_id, _ in entries])
            done += len(entries)

    return await timed(redis, count, run), done


async def _runtime(url: str, prefix: str, group: str, count: int) -> tuple[Drained, int]:
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

    async def run() -> None:
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(all_handled.wait(), 600)
            await _until_acked(redis, stream, group)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)

    try:
        return await timed(redis, count, run), handled
    finally:
        await redis.aclose()


async def _faststream(url: str, stream: str, group: str, count: int) -> tuple[Drained, int]:
    from bench._faststream_peer import drain

    redis = Redis.from_url(url)
    # FastStream creates its group at `$` (new entries only): this one reads the stream
    # from its start, as the other variants' groups do.
    await redis.xgroup_create(stream, group, id="0")
    handled = 0

    async def run() -> None:
        nonlocal handled
        handled = await drain(
            url, stream, group, count, BATCH, lambda: _until_acked(redis, stream, group)
        )

    try:
        return await timed(redis, count, run), handled
    finally:
        await redis.aclose()


def _faststream_missing() -> str | None:
    """Why the FastStream row cannot run, or None when it can."""
    try:
        import bench._faststream_peer  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc}): pip install -e '.[bench]'"
    return None


async def _miscount(redis: Redis, stream: str, group: str, count: int, seen: int) -> str | None:
    """What is wrong with a drain: every one of the N entries read and acknowledged, by the
    server's count and by the variant's own; None when nothing is."""
    info = await _group(redis, stream, group)
    read, pending = info.get("entries-read"), info["pending"]
    if read == count and pending == 0 and seen == count:
        return None
    return f"group {group}: entries-read {read}, pending {pending}, handled {seen}, of {count}"


VARIANTS = ("raw", "runtime", "faststream")


async def _bench(
    events: int, rounds: int, variants: list[str]
) -> tuple[dict[str, list[Drained]], list[str]]:
    results: dict[str, list[Drained]] = {name: [] for name in variants}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(tmp, appendonly=False) as server:
        redis = Redis.from_url(server.url)
        prefix = "bench"
        stream = Keys(prefix).events()
        await _fill(redis, stream, events)
        for n in range(rounds):
            # Rotate which goes first so none always gets the warmer server.
            order = variants[n % len(variants) :] + variants[: n % len(variants)]
            for which in order:
                group = f"{which}{n}"
                if which == "raw":
                    drained, seen = await _raw(redis, stream, group, events)
                elif which == "runtime":
                    drained, seen = await _runtime(server.url, prefix, group, events)
                else:
                    drained, seen = await _faststream(server.url, stream, group, events)
                problem = await _miscount(redis, stream, group, events, seen)
                if problem:
                    problems.append(f"{which}, round {n}: {problem}")
                results[which].append(drained)
            print(
                f"  round {n}: "
                + "  ".join(
                    _round_figures(name, results[name][-1], results["raw"][-1]) for name in variants
                ),
                flush=True,
            )
        await redis.aclose()
    return results, problems


def _round_figures(name: str, drained: Drained, raw: Drained) -> str:
    return (
        f"{name} {drained.per_s:,.0f}/s ({_ratio(drained.per_s / raw.per_s)}, "
        f"{drained.cpu_us:.1f} + {drained.valkey_us:.1f} µs)"
    )


LABELS = {
    "raw": "raw redis-py loop",
    "runtime": "runtime, no-op",
    "faststream": "FastStream, no-op",
}


def _ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000, help="entries on the stream")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every variant")
    args = parser.parse_args(argv)
    # The runtime logs a line or two per round; keep them out of the report.
    configure_logging(component="bench", level="warning", fmt="json", stream=io.StringIO())
    missing = _faststream_missing()
    variants = [v for v in VARIANTS if v != "faststream" or missing is None]
    print(f"events per round {args.events}, rounds {args.rounds}, batch {BATCH}")
    print("per round: events/s (ratio to raw, CPU µs per event: this process + Valkey)")
    results, problems = asyncio.run(_bench(args.events, args.rounds, variants))
    # Each round runs every variant back to back, so the per-round ratio cancels the
    # drifts of a shared machine; the median of those ratios is the figure reported.
    # The CPU ratio (raw's CPU per event over the variant's) is what the ratio would be
    # with a core of one's own: the figure least moved by the machine's load.
    raw = results["raw"]
    print(
        f"{'variant':18} {'events/s':>8}  {'ratio per round':32} {'median':>6}  "
        f"{'cpu ratio per round':32} {'median':>6}  {'CPU µs/event':>12} {'Valkey µs':>9}"
    )
    for name in VARIANTS:
        if name not in results:
            print(f"{LABELS[name]:18} {missing}")
            continue
        rounds = results[name]
        pairs = list(zip(rounds, raw, strict=True))
        ratios = [d.per_s / r.per_s for d, r in pairs]
        cpu_ratios = [r.cpu_us / d.cpu_us for d, r in pairs]
        print(
            f"{LABELS[name]:18} {statistics.median(d.per_s for d in rounds):>8,.0f}  "
            f"{' '.join(map(_ratio, ratios)):32} {_ratio(statistics.median(ratios)):>6}  "
            f"{' '.join(map(_ratio, cpu_ratios)):32} {_ratio(statistics.median(cpu_ratios)):>6}  "
            f"{statistics.median(d.cpu_us for d in rounds):>12.1f} "
            f"{statistics.median(d.valkey_us for d in rounds):>9.1f}"
        )
    print(
        "ratio: events/s over the raw loop's in the same round; cpu ratio: the raw loop's CPU "
        "per event over the variant's, same round; medians over rounds (runtime goal >= 0.80)"
    )
    for problem in problems:
        print(f"miscount: {problem}")
    if problems:
        return 1
    print(f"every variant read all {args.events} entries in every round; none left pending")
    return 0
