"""Memory held flat: a worker draining a large backlog, a receiver under a long steady load.

`python -m bench memory` starts Valkey, then

1. fills `rtt:events` with `--backlog` real events (default 1,000,000; 10 % alerting)
   and runs a worker (the built-in alerts consumer) until its group has acknowledged
   them all, sampling its RSS;
2. runs a receiver under `--rate` events/s for `--minutes` (default 10), sampling its RSS.

It prints start, peak and end RSS of each, and the RSS after every tenth of the run: a
leak shows as a line that keeps climbing, a working set as one that levels off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._http import wait_up

__all__ = ["main"]

PATH = "/realTimeTranscriptionEvents"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _report(name: str, samples: list[float]) -> None:
    tenths = [samples[min(len(samples) - 1, i * len(samples) // 10)] for i in range(10)]
    print(
        f"{name}: RSS start {samples[0]:.1f} MB, peak {max(samples):.1f} MB, end "
        f"{samples[-1]:.1f} MB; by tenths: {' '.join(f'{s:.0f}' for s in tenths)}"
    )


def _fill(url: str, prefix: str, count: int) -> None:
    import msgspec
    from redis import Redis

    from rtt.samples import sample_event
    from shared.keys import Keys

    stream = Keys(prefix).events()
    bodies = [
        msgspec.json.encode(sample_event("stopped", cause="error" if n % 10 == 0 else "closed"))
        for n in range(1000)
    ]
    redis = Redis.from_url(url)
    try:
        for start in range(0, count, 1000):
            pipe = redis.pipeline(transaction=False)
            for n in range(start, min(count, start + 1000)):
                body = bodies[n % 1000].replace(b'"id":"t-', f'"id":"t-{n}-'.encode(), 1)
                pipe.xadd(stream, {"type": "realTimeTranscriptionStopped", "body": body})
            pipe.execute()
    finally:
        redis.close()


def _drain_worker(url: str, prefix: str, count: int, env: dict[str, str]) -> list[float]:
    from redis import Redis

    from shared.keys import Keys

    stream = Keys(prefix).events()
    worker = subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL)
    samples = []
    redis = Redis.from_url(url)
    try:
        while True:
            groups = {g["name"]: g for g in redis.xinfo_groups(stream)}
            alerts = groups.get(b"alerts")
            if alerts:  # consuming: the imports and start-up are behind it
                samples.append(_rss_mb(worker.pid))
            done = alerts is not None and alerts.get("lag") == 0 and alerts["pending"] == 0
            if done and alerts is not None and alerts["entries-read"] >= count:
                samples.append(_rss_mb(worker.pid))  # a backlog drained within a second
                break
            time.sleep(1)
    finally:
        redis.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return samples


async def _steady(url: str, rate: float, seconds: float) -> int:
    """Open loop: events leave on schedule, up to 256 in flight, whatever the answers take."""
    import aiohttp

    from rtt.samples import sample_body

    headers = {"Content-Type": "application/json"}
    in_flight = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(url, data=sample_body("stopped"), headers=headers) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"answered {resp.status}")
        finally:
            in_flight.release()

    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < seconds:
            due = int((loop.time() - start) * rate)
            while sent < due:
                await in_flight.acquire()
                task = asyncio.create_task(one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    return sent


def _steady_receiver(env: dict[str, str], rate: float, seconds: float) -> list[float]:
    from shared.embedded import free_port

    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "receiver"],
        env={**env, "RTT_PORT": str(port)},
        stdout=subprocess.DEVNULL,
    )
    samples: list[float] = []

    async def run() -> int:
        async def sample() -> None:
            while True:
                samples.append(_rss_mb(receiver.pid))
                await asyncio.sleep(seconds / 100)

        await asyncio.to_thread(wait_up, f"http://127.0.0.1:{port}/readyz")
        sampler = asyncio.create_task(sample())
        try:
            return await _steady(f"http://127.0.0.1:{port}{PATH}", rate, seconds)
        finally:
            sampler.cancel()

    try:
        sent = asyncio.run(run())
        print(
            f"receiver: {sent} events posted over {seconds:g} s ({sent / seconds:.0f}/s, "
            f"asked {rate:g}/s), all 204"
        )
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(60)
    return samples


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args(argv)
    from shared.embedded import EmbeddedValkey

    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        prefix = f"mem{os.getpid()}"
        env = {
            **os.environ,
            "RTT_REDIS_URL": valkey.url,
            "RTT_KEY_PREFIX": prefix,
            "RTT_HOST": "127.0.0.1",
            "RTT_LOG_FORMAT": "json",
            "RTT_LOG_LEVEL": "warning",
            "RTT_WORKER_METRICS_PORT": "0",
            "RTT_SPOOL_DIR": str(Path(tmp) / "spool"),
        }
        if args.backlog:
            started = time.monotonic()
            _fill(valkey.url, prefix, args.backlog)
            print(f"backlog of {args.backlog} events written in {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            samples = _drain_worker(valkey.url, prefix, args.backlog, env)
            print(f"worker drained it in {time.monotonic() - started:.0f} s")
            _report("worker", samples)
        if args.minutes:
            _report("receiver", _steady_receiver(env, args.rate, args.minutes * 60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
