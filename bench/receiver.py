"""Requests/s of the receiver against a bare aiohttp handler, under the same load.

`python -m bench receiver` starts its own Valkey (AOF on, as `rtt serve` runs it), then
serves the same port first with a handler that only reads the body and answers 204, then
with the real receiver (Basic auth, dedup, metrics on, every event stored). Each server
runs in a process of its own; the load comes from another process, so the client never
shares the server's core. It prints both rates and their ratio, and checks that every
204 of the receiver is on the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

PATH = "/realTimeTranscriptionEvents"
USER, PASSWORD = "bandwidth", "bench-secret"


# --- the two servers -------------------------------------------------------------------


def _serve_bare(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, handle)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the load client -------------------------------------------------------------------


def _bodies(count: int) -> list[bytes]:
    import msgspec

    from rtt.samples import sample_event

    template = sample_event("stopped", cause="closed")
    bodies = []
    for n in range(count):
        template["callId"] = f"c-bench-{os.getpid()}-{n}"
        bodies.append(msgspec.json.encode(template))
    return bodies


async def _load(url: str, seconds: float, concurrency: int, warmup_s: float) -> dict[str, object]:
    import aiohttp

    bodies = iter(_bodies(int(60_000 * seconds)))
    headers = {
        "Content-Type": "application/json",
        "Authorization": aiohttp.encode_basic_auth(USER, PASSWORD),
    }
    statuses: Counter[int] = Counter()
    counting = False

    async def client(session: aiohttp.ClientSession, until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            async with session.post(url, data=next(bodies), headers=headers) as resp:
                await resp.read()
                if counting:
                    statuses[resp.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(client(session, loop.time() + warmup_s) for _ in range(concurrency)))
        counting = True
        started = time.perf_counter()
        await asyncio.gather(*(client(session, loop.time() + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    return {"requests": total, "seconds": elapsed, "rate": total / elapsed, "statuses": statuses}


# --- the run ---------------------------------------------------------------------------


def _wait_up(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} not up in {timeout_s}s")


def _measure(
    server: list[str], env: dict[str, str], port: int, args: argparse.Namespace
) -> dict[str, object]:
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(server, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_up(base + "/healthz")
        client = subprocess.run(
            [sys.executable, "-m", "bench.receiver", "load", "--url", base + PATH,
             "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
            capture_output=True, check=True, timeout=args.seconds * 4 + 60,
        )  # fmt: skip
        result: dict[str, object] = json.loads(client.stdout)
        return result
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _run(args: argparse.Namespace) -> int:
    from redis import Redis

    from shared.embedded import EmbeddedValkey, free_port
    from shared.keys import Keys

    bare_rates: list[float] = []
    real_rates: list[float] = []
    statuses: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        prefix = f"bench{os.getpid()}"
        env = {
            **os.environ, "RTT_REDIS_URL": valkey.url, "RTT_KEY_PREFIX": prefix,
            "RTT_HOST": "127.0.0.1", "RTT_LOG_FORMAT": "json",
            "RTT_BASIC_AUTH": f"{USER}:{PASSWORD}", "RTT_SPOOL_DIR": str(Path(tmp) / "spool"),
        }  # fmt: skip
        # Rounds alternate, so whatever else the machine does weighs on both sides alike.
        for _ in range(args.rounds):
            port = free_port()
            bare = _measure(
                [sys.executable, "-m", "bench.receiver", "bare", "--port", str(port)],
                dict(os.environ), port, args,
            )  # fmt: skip
            bare_rates.append(float(bare["rate"]))  # type: ignore[arg-type]
            port = free_port()
            real = _measure(
                [sys.executable, "-m", "receiver"], {**env, "RTT_PORT": str(port)}, port, args
            )
            real_rates.append(float(real["rate"]))  # type: ignore[arg-type]
            statuses.update(real["statuses"])  # type: ignore[arg-type]
        redis = Redis.from_url(valkey.url)
        try:
            on_stream = redis.xlen(Keys(prefix).events())
        finally:
            redis.close()
    bare_rate, real_rate = statistics.median(bare_rates), statistics.median(real_rates)
    ratio = real_rate / bare_rate
    rounds = ", ".join(f"{r / b:.2f}" for b, r in zip(bare_rates, real_rates, strict=True))
    print(f"bare aiohttp handler answering 204: {bare_rate:8.0f} requests/s (median)")
    print(f"receiver, auth + dedup + metrics:  {real_rate:8.0f} requests/s (median)")
    print(f"receiver answers: {dict(statuses)}; entries on the stream: {on_stream}")
    print(
        f"ratio receiver/bare: {ratio:.2f} (rounds: {rounds}; {args.rounds} x {args.seconds:g} s, "
        f"concurrency {args.concurrency}, {os.cpu_count()} cores)"
    )
    # Every 204 counted (warm-ups too) is on the stream: nothing was answered and lost.
    return 0 if set(statuses) == {"204"} and on_stream >= statuses["204"] else 1


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench receiver", description=__doc__)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "bare", "load"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--url")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.mode == "bare":
        _serve_bare(args.port)
        return 0
    if args.mode == "load":
        result = asyncio.run(_load(args.url, args.seconds, args.concurrency, args.warmup))
        print(json.dumps(result))
        return 0
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
