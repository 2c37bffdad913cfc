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
import itertools
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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


def _bodies() -> Iterator[bytes]:
    """Distinct events (dedup on), made by substituting a counter into one encoded event."""
    import msgspec

    from rtt.samples import sample_event

    template = msgspec.json.encode(sample_event("stopped", call_id="c-bench-CALL"))
    prefix = f"{os.getpid()}-".encode()
    for n in itertools.count():
        yield template.replace(b"CALL", prefix + str(n).encode())


async def _load(url: str, seconds: float, concurrency: int, warmup_s: float) -> dict[str, object]:
    import aiohttp

    bodies = _bodies()
    headers = {
        "Content-Type": "application/json",
        "Authorization": aiohttp.encode_basic_auth(USER, PASSWORD),
    }
    statuses: Counter[int] = Counter()
    counting = False
    sent = 0

    async def client(session: aiohttp.ClientSession, until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            async with session.post(url, data=next(bodies), headers=headers) as resp:
                await resp.read()
                nonlocal sent
                sent += 1
                if counting:
                    statuses[resp.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    cpu_start_s = time.process_time()
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(client(session, loop.time() + warmup_s) for _ in range(concurrency)))
        counting = True
        started = time.perf_counter()
        await asyncio.gather(*(client(session, loop.time() + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    return {
        "requests": total, "seconds": elapsed, "rate": total / elapsed, "statuses": statuses,
        "sent": sent, "cpu_s": time.process_time() - cpu_start_s,
    }  # fmt: skip


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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(
    server: list[str], env: dict[str, str], port: int, args: argparse.Namespace, valkey_pid: int
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(server, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_up(base + "/healthz")
        before = _cpu_s(process.pid), _cpu_s(valkey_pid)
        client = subprocess.run(
            [sys.executable, "-m", "bench.receiver", "load", "--url", base + PATH,
             "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
            capture_output=True, check=True, timeout=args.seconds * 4 + 60,
        )  # fmt: skip
        after = _cpu_s(process.pid), _cpu_s(valkey_pid)
        result: dict[str, Any] = json.loads(client.stdout)
        sent = result["sent"]
        result["us_per_request"] = {
            "server": 1e6 * (after[0] - before[0]) / sent,
            "valkey": 1e6 * (after[1] - before[1]) / sent,
            "client": 1e6 * result["cpu_s"] / sent,
        }
        return result
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _median_costs(results: list[dict[str, Any]]) -> dict[str, float]:
    return {
        part: statistics.median(r["us_per_request"][part] for r in results)
        for part in ("server", "valkey", "client")
    }


def _run(args: argparse.Namespace) -> int:
    from redis import Redis

    from shared.embedded import EmbeddedValkey, free_port
    from shared.keys import Keys

    bare: list[dict[str, Any]] = []
    real: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        assert valkey.process is not None
        prefix = f"bench{os.getpid()}"
        env = {
            **os.environ, "RTT_REDIS_URL": valkey.url, "RTT_KEY_PREFIX": prefix,
            "RTT_HOST": "127.0.0.1", "RTT_LOG_FORMAT": "json",
            "RTT_BASIC_AUTH": f"{USER}:{PASSWORD}", "RTT_SPOOL_DIR": str(Path(tmp) / "spool"),
        }  # fmt: skip
        # Rounds alternate, so whatever else the machine does weighs on both sides alike.
        for _ in range(args.rounds):
            port = free_port()
            server = [sys.executable, "-m", "bench.receiver", "bare", "--port", str(port)]
            bare.append(_measure(server, dict(os.environ), port, args, valkey.process.pid))
            port = free_port()
            server = [sys.executable, "-m", "receiver"]
            env["RTT_PORT"] = str(port)
            real.append(_measure(server, env, port, args, valkey.process.pid))
        redis = Redis.from_url(valkey.url)
        try:
            on_stream = redis.xlen(Keys(prefix).events())
        finally:
            redis.close()
    statuses: Counter[str] = Counter()
    for result in real:
        statuses.update(result["statuses"])
    bare_rate = statistics.median(r["rate"] for r in bare)
    real_rate = statistics.median(r["rate"] for r in real)
    rounds = ", ".join(f"{r['rate'] / b['rate']:.2f}" for b, r in zip(bare, real, strict=True))
    bare_cost, real_cost = _median_costs(bare), _median_costs(real)
    print(f"bare aiohttp handler answering 204: {bare_rate:8.0f} requests/s (median)")
    print(f"receiver, auth + dedup + metrics:  {real_rate:8.0f} requests/s (median)")
    print(
        f"ratio receiver/bare: {real_rate / bare_rate:.2f} (rounds: {rounds}; {args.rounds} x "
        f"{args.seconds:g} s, concurrency {args.concurrency}, {os.cpu_count()} cores)"
    )
    # CPU time per request is steadier than requests/s on a shared machine, and explains
    # the ratio: on a saturated machine it is the inverse ratio of the summed costs.
    for name, cost in (("bare", bare_cost), ("receiver", real_cost)):
        parts = ", ".join(f"{part} {us:.1f}" for part, us in cost.items())
        print(f"CPU per request, {name}: {parts} (us)")
    bound = sum(bare_cost.values()) / sum(real_cost.values())
    print(f"ratio if every core were busy (inverse of summed CPU per request): {bound:.2f}")
    print(f"receiver answers: {dict(statuses)}; entries on the stream: {on_stream}")
    # Every 204 counted is on the stream (warm-ups add more): nothing answered and lost.
    return 0 if set(statuses) == {"204"} and on_stream >= statuses["204"] else 1


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench receiver", description=__doc__)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "bare", "load"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--url")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
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
