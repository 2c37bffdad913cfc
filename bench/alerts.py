"""Alerts consumer throughput, as a ratio to a no-op consumer on the same runtime.

Both drain the same stream through their own consumer group on the same Valkey, in the
same run. Two streams: a realistic mix (every type and cause, one event per
transcription, so about half of the Stopped and Rejected events alert), and a storm
(every event a `connection-error` to one destination: one first alert, the rest grouped).
The figures that matter are the ratios alerts / no-op. Each round also says the CPU time
per event of this process (the worker's runtime and consumer) and of Valkey, and the cpu
ratios they give (the no-op's CPU per event over the alerts consumer's, without Valkey's
and with it): on a loaded machine the events/s follow each drain's share of a core, the
CPU per event much less. The two drains swap places every round. What the log received
is counted: a line per alerting event and round, naming every alert key.

    python -m bench alerts            (defaults: 20,000 events, 3 rounds)
    python -m bench alerts --log pipe (log lines to a pipe another process drains, as a
                                       stdout read by a container runtime or journald is)
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
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import BinaryIO

import msgspec
from redis.asyncio import Redis

from bench._alert_lines import AlertLines, count_alert_lines
from bench._drain import Drained, timed, wait_drained
from rtt.samples import sample_body
from rtt.send import kinds
from shared.embedded import EmbeddedValkey
from shared.entries import StreamEntry
from shared.events import EVENT_CLASSES, Event, decode_event
from shared.keys import Keys
from shared.logs import configure_logging
from shared.loop import run, settle_collector
from shared.settings import Settings, load_settings
from worker.alerts import AlertOptions, make_alerts_consumer
from worker.alerts.rules import alert_for
from worker.consumers import Consumer, Context, consumer
from worker.runtime import Worker

_EVENTS = tuple(EVENT_CLASSES.values())


async def _fill(
    redis: Redis, stream: str, count: int, storm: bool, options: AlertOptions
) -> frozenset[str]:
    """The stream's events; returns the alert keys of those that alert."""
    rng = random.Random(11)
    plan = kinds("mixed", "mixed", rng)
    keys: set[str] = set()
    for start in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 5000)):
                cause: str | None
                if storm:
                    kind, cause = "realTimeTranscriptionStopped", "connection-error"
                else:
                    kind, cause = next(plan)
                body = sample_body(kind, cause=cause, rng=rng)
                event = decode_event(body)
                alert = alert_for(event, options) if isinstance(event, _EVENTS) else None
                if alert is not None:
                    keys.add(alert.alert_key)
                pipe.xadd(
                    stream, StreamEntry(kind, body, int(time.time() * 1000), f"r{n}").to_fields()
                )
            await pipe.execute()
    return frozenset(keys)


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
            await wait_drained(redis, stream, item.name, count, 0.005)
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


class _Round(msgspec.Struct, frozen=True):
    collector: str
    noop: Drained
    alerts: Drained

    @property
    def ratio(self) -> float:
        return self.alerts.per_s / self.noop.per_s

    @property
    def cpu_ratio(self) -> float:
        return self.noop.cpu_us / self.alerts.cpu_us

    @property
    def cpu_ratio_with_valkey(self) -> float:
        noop, alerts = self.noop, self.alerts
        return (noop.cpu_us + noop.valkey_us) / (alerts.cpu_us + alerts.valkey_us)


class _Scenario(msgspec.Struct, frozen=True):
    alert_keys: frozenset[str]  # of the stream's alerting events
    rounds: list[_Round]


async def _scenario(
    url: str, prefix: str, events: int, rounds: int, storm: bool, collector: str
) -> _Scenario:
    options = AlertOptions.from_settings(_settings(url, prefix, "bench-alerts"))
    redis = Redis.from_url(url)
    alert_keys = await _fill(redis, Keys(prefix).events(), events, storm, options)
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
        # The runtime names the group after the consumer: rename for a fresh group.
        alerts_consumer = _renamed(make_alerts_consumer(options), f"alerts{n}")
        drains = [_noop(f"noop{n}"), alerts_consumer]
        first, second = drains if n % 2 == 0 else drains[::-1]
        drained = {first.name: await _drain(url, prefix, first, events)}
        drained[second.name] = await _drain(url, prefix, second, events)
        done = _Round(mode, drained[f"noop{n}"], drained[f"alerts{n}"])
        results.append(done)
        noop, alerts = done.noop, done.alerts
        print(
            f"  round {n}: no-op {noop.per_s:>8,.0f}/s  alerts {alerts.per_s:>8,.0f}/s  "
            f"ratio {done.ratio:.2f}  cpu ratio {done.cpu_ratio:.2f}, with Valkey "
            f"{done.cpu_ratio_with_valkey:.2f}  CPU µs/event (worker + Valkey): no-op "
            f"{noop.cpu_us:.0f} + {noop.valkey_us:.0f}, alerts {alerts.cpu_us:.0f} + "
            f"{alerts.valkey_us:.0f}  collector {mode}: gc µs/event no-op "
            f"{noop.gc_us:.1f}, alerts {alerts.gc_us:.1f}"
        )
    return _Scenario(alert_keys, results)


def _renamed(item: Consumer, name: str) -> Consumer:
    return dataclasses.replace(item, name=name)


async def _bench(events: int, rounds: int, collector: str) -> dict[str, _Scenario]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(tmp, appendonly=False) as server:
        print("mix (every type and cause):")
        mix = await _scenario(server.url, "mix", events, rounds, False, collector)
        print("storm (all connection-error to one destination):")
        storm = await _scenario(server.url, "storm", events, rounds, True, collector)
    return {"mix": mix, "storm": storm}


class _Log:
    """Where the log lines go, and what of them was counted once the run is over."""

    def __init__(self) -> None:
        self.counted: AlertLines | None = None


@contextlib.contextmanager
def _in_memory(log: _Log) -> Iterator[BinaryIO]:
    stream = io.BytesIO()
    yield stream
    log.counted = count_alert_lines(stream.getvalue().splitlines())


@contextlib.contextmanager
def _pipe(log: _Log) -> Iterator[BinaryIO]:
    """A pipe drained by another process, which counts the lines as they come."""
    read, write = os.pipe()
    drain = subprocess.Popen(
        [sys.executable, "-m", "bench._alert_lines"], stdin=read, stdout=subprocess.PIPE
    )
    os.close(read)
    try:
        with os.fdopen(write, "wb") as stream:
            yield stream
    finally:
        out, _ = drain.communicate(timeout=60)
    log.counted = msgspec.json.decode(out, type=AlertLines)


def _check_lines(results: dict[str, _Scenario], rounds: int, counted: AlertLines) -> bool:
    """Each round logs each of its scenario's alerts once (the rounds clear the
    once-records): as many lines as rounds times alerting events, naming every key."""
    keys = frozenset().union(*(s.alert_keys for s in results.values()))
    total = rounds * sum(len(s.alert_keys) for s in results.values())
    per_round = " + ".join(f"{name} {len(s.alert_keys):,}" for name, s in results.items())
    if counted.total == total and counted.keys == keys:
        print(
            f"alert lines: {total:,} counted, {rounds} x ({per_round}) alerting events, "
            f"naming every one of the {len(keys):,} alert keys"
        )
        return True
    print(
        f"alert lines: expected {total:,} naming {len(keys):,} alert keys ({per_round} a "
        f"round), counted {counted.total:,} naming {len(counted.keys):,}, "
        f"{len(keys - counted.keys):,} of them missing"
    )
    return False


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
    log = _Log()
    with (_in_memory if args.log == "memory" else _pipe)(log) as stream:
        configure_logging(component="bench", level="info", fmt="json", stream=stream)
        # Other benches may follow in this process: stop signals stay as they were.
        results = run(_bench(args.events, args.rounds, args.collector), program_ends=False)
    print(f"events per round {args.events}, rounds {args.rounds}")
    for name, scenario in results.items():
        for mode in sorted({r.collector for r in scenario.rounds}):
            rows = [r for r in scenario.rounds if r.collector == mode]
            alerts = [r.alerts for r in rows]
            print(
                f"ratio alerts / no-op, {name:<5}  "
                f"{statistics.median(r.ratio for r in rows):.2f}, "
                f"cpu ratio {statistics.median(r.cpu_ratio for r in rows):.2f}, "
                f"with Valkey {statistics.median(r.cpu_ratio_with_valkey for r in rows):.2f} "
                f"(medians), collector {mode}: alerts "
                f"{statistics.median(a.per_s for a in alerts):,.0f}/s, "
                f"CPU {statistics.median(a.cpu_us for a in alerts):.0f} µs/event, "
                f"gc {statistics.median(a.gc_us for a in alerts):.1f} µs/event (medians)"
            )
    assert log.counted is not None
    return 0 if _check_lines(results, args.rounds, log.counted) else 1
