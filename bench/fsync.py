"""What `appendfsync always` costs a 204, through the receiver's shared round trips.

`python -m bench fsync` starts its own Valkey (AOF on) and one receiver, then measures the
same load under `appendfsync everysec` and `appendfsync always`, switched with CONFIG SET
on the same server, in alternating rounds: whatever else the machine does weighs on both
alike. With `always`, Valkey fsyncs the AOF before it answers a write, so a 204 survives an
OS crash or power loss; with `everysec` up to a second of acknowledged events can be lost.
The receiver's flushes carry many events per script call, so one fsync covers a batch.

It prints requests/s and latency percentiles for each setting and concurrency, their
ratio, and checks that every 204 is on the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._http import wait_up

__all__ = ["main"]

PATH = "/realTimeTranscriptionEvents"
SETTINGS = ("everysec", "always")


def _bodies(tag: str) -> Iterator[bytes]:
    import msgspec

    from rtt.samples import sample_event

    template = msgspec.json.encode(sample_event("stopped", call_id="c-fsync-CALL"))
    for n in itertools.count():
        yield template.replace(b"CALL", f"{tag}-{n}".encode())


async def _load(url: str, seconds: float, concurrency: int, tag: str) -> dict[str, Any]:
    import aiohttp

    bodies = _bodies(tag)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stored = 0  # warm-up included: every 204 must be on the stream

    async def client(session: aiohttp.ClientSession, until: float) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            async with session.post(url, data=next(bodies), headers=headers) as resp:
                await resp.read()
            latencies.append(time.perf_counter() - started)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 204:
                nonlocal stored
                stored += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        warm = time.perf_counter() + 0.5
        await asyncio.gather(*(client(s, warm) for _ in range(concurrency)))
        latencies.clear()
        statuses.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client(s, started + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "statuses": statuses,
        "stored": stored,
    }


def _run(args: argparse.Namespace) -> int:
    from redis import Redis

    from shared.embedded import EmbeddedValkey, free_port
    from shared.keys import Keys

    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        prefix = f"fsync{os.getpid()}"
        port = free_port()
        env = {
            **os.environ,
            "RTT_REDIS_URL": valkey.url,
            "RTT_KEY_PREFIX": prefix,
            "RTT_HOST": "127.0.0.1",
            "RTT_PORT": str(port),
            "RTT_LOG_FORMAT": "json",
            "RTT_LOG_LEVEL": "warning",
            "RTT_SPOOL_DIR": str(Path(tmp) / "spool"),
        }
        receiver = subprocess.Popen([sys.executable, "-m", "receiver"], env=env)
        redis = Redis.from_url(valkey.url)
        try:
            wait_up(f"http://127.0.0.1:{port}/healthz", timeout_s=20)
            # Rounds alternate the setting, so both see the same machine.
            for round_, concurrency, setting in itertools.product(
                range(args.rounds), args.concurrency, SETTINGS
            ):
                redis.config_set("appendfsync", setting)
                load = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.fsync",
                        "load",
                        "--seconds",
                        str(args.seconds),
                        "--url",
                        f"http://127.0.0.1:{port}{PATH}",
                        "--concurrency",
                        str(concurrency),
                        "--tag",
                        f"{setting}-{concurrency}-{round_}",
                    ],
                    capture_output=True,
                    check=True,
                    timeout=args.seconds * 4 + 60,
                )
                results.setdefault((setting, concurrency), []).append(json.loads(load.stdout))
            on_stream = redis.xlen(Keys(prefix).events())
        finally:
            redis.close()
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(60)
    answered = sum(run["stored"] for runs in results.values() for run in runs)
    print(f"rounds: {args.rounds} x {args.seconds:g} s, settings alternating")
    for concurrency in args.concurrency:
        rates = {}
        for setting in SETTINGS:
            runs = results[setting, concurrency]
            rates[setting] = statistics.median(r["rate"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            print(
                f"concurrency {concurrency:3d}, appendfsync {setting:8s}: "
                f"{rates[setting]:7.0f} requests/s, p50 {p50:6.2f} ms, p99 {p99:6.2f} ms (medians)"
            )
        ratio = rates["always"] / rates["everysec"]
        print(f"concurrency {concurrency:3d}: always / everysec = {ratio:.2f}")
    print(f"answered 204: {answered}, on the stream: {on_stream}")
    return 0 if answered == on_stream else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fsync", description=__doc__)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "load"])
    parser.add_argument("--url")
    parser.add_argument("--tag", default="")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.mode == "load":
        [concurrency] = args.concurrency
        print(json.dumps(asyncio.run(_load(args.url, args.seconds, concurrency, args.tag))))
        return 0
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
