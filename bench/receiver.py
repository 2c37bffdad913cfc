"""Requests/s and latency of the receiver against bare aiohttp and two naive peers.

`python -m bench receiver` starts its own Valkey (AOF on, as `rtt serve` runs it), then
serves a port in turn with each variant, one process each, rounds interleaved so whatever
else the machine does weighs on every variant alike:

- `bare`: a handler that reads the body and answers 204, on uvloop (the baseline), and
  `bare-asyncio`, the same on asyncio's default loop;
- `receiver`: the real receiver, Basic auth, dedup and metrics on, every event stored;
- `receiver-otel`: the same with tracing on (spans made, then dropped: no exporter);
- `naive`: aiohttp + msgspec + one awaited XADD per request, on uvloop;
- `fastapi`: FastAPI + pydantic + one XADD per request (with the `bench` extra installed).

The load is wrk (one thread) when it is installed, pinned with Valkey to core 0, the
server to core 1: 64 keep-alive connections, then one connection for latency. Without wrk
the Python client stands in and says so: it saturates before the server does, so its
ratios understate the gaps. Each server's share of its core is printed; a baseline well
below 100 % means the load generator, not the server, set the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import _wrk as wrk
from bench._http import wait_up
from bench._proc import cpu_s

__all__ = ["main"]

PATH = "/realTimeTranscriptionEvents"
USER, PASSWORD = "bandwidth", "bench-secret"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SERVER_CORE, LOAD_CORE = 1, 0


# --- the servers -----------------------------------------------------------------------


def _run_app(app: Any, port: int, loop: str) -> None:
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_forever(app, port))


async def _serve_forever(app: Any, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def _serve_bare(port: int, loop: str) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post(PATH, handle)
    _run_app(app, port, loop)


def _serve_naive(port: int, redis_url: str, stream: str) -> None:
    """What a first version would do: decode, one awaited XADD, answer."""
    import msgspec
    from aiohttp import web
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)

    class Event(msgspec.Struct):
        eventType: str
        callId: str

    decode = msgspec.json.Decoder(Event).decode

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        event = decode(body)
        await redis.xadd(stream, {"type": event.eventType, "body": body})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post(PATH, handle)
    _run_app(app, port, "uvloop")


def _serve_fastapi(port: int, redis_url: str, stream: str) -> None:
    import uvicorn
    from fastapi import FastAPI, Request, Response
    from pydantic import BaseModel
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    app = FastAPI()

    class Event(BaseModel):
        eventType: str
        callId: str

    async def handle(request: Request) -> Response:
        body = await request.body()
        event = Event.model_validate_json(body)
        await redis.xadd(stream, {"type": event.eventType, "body": body})
        return Response(status_code=204)

    # Annotations are strings here (postponed evaluation) naming local imports, which
    # FastAPI cannot resolve: give it the classes themselves.
    handle.__annotations__ = {"request": Request}
    app.post(PATH, status_code=204, response_model=None)(handle)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _fastapi_installed() -> bool:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


# --- the Python load client (fallback) -------------------------------------------------


def _template() -> bytes:
    import msgspec

    from rtt.samples import sample_event

    return msgspec.json.encode(sample_event("stopped", call_id="c-bench-CALL"))


def _bodies() -> Iterator[bytes]:
    """Distinct events (dedup on), made by substituting a counter into one encoded event."""
    template = _template()
    prefix = f"{os.getpid()}-".encode()
    for n in itertools.count():
        yield template.replace(b"CALL", prefix + str(n).encode())


async def _load(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import aiohttp

    bodies = _bodies()
    headers = {"Content-Type": "application/json", "Authorization": AUTH}
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession, until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            started = time.perf_counter()
            async with session.post(url, data=next(bodies), headers=headers) as resp:
                await resp.read()
                latencies.append(time.perf_counter() - started)
                statuses[resp.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await asyncio.gather(*(client(session, loop.time() + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    total = sum(statuses.values())

    def percentile(p: float) -> float:
        return 1e6 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "requests": total,
        "seconds": elapsed,
        "rate": total / elapsed,
        "non_2xx": total - statuses[204],
        "p50_us": percentile(0.5),
        "p99_us": percentile(0.99),
    }


def _python_load(url: str, seconds: float, connections: int) -> dict[str, Any]:
    client = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.receiver",
            "load",
            "--url",
            url,
            "--seconds",
            str(seconds),
            "--concurrency",
            str(connections),
        ],
        capture_output=True,
        check=True,
        timeout=seconds * 4 + 60,
        preexec_fn=_pin(LOAD_CORE),
    )
    result: dict[str, Any] = json.loads(client.stdout)
    return result


def _wrk_load(url: str, seconds: float, connections: int) -> dict[str, Any]:
    return wrk.run_wrk(
        url,
        body=_template(),
        seconds=seconds,
        connections=connections,
        core=LOAD_CORE if _cores() >= 2 else None,
        auth=AUTH,
    )


# --- the run ---------------------------------------------------------------------------


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _pin(core: int) -> Callable[[], None] | None:
    if _cores() < 2:
        return None
    return lambda: os.sched_setaffinity(0, {core})


Load = Callable[[str, float, int], dict[str, Any]]


def _measure(
    server: list[str], env: dict[str, str], args: argparse.Namespace, load: Load, valkey_pid: int
) -> dict[str, Any]:
    port = int(env["RTT_PORT"])
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        server, env=env, stdout=subprocess.DEVNULL, preexec_fn=_pin(SERVER_CORE)
    )
    try:
        wait_up(base + "/healthz", timeout_s=20)
        load(base + PATH, args.warmup, args.concurrency)
        before = time.perf_counter(), cpu_s(process.pid), cpu_s(valkey_pid)
        result = load(base + PATH, args.seconds, args.concurrency)
        after = time.perf_counter(), cpu_s(process.pid), cpu_s(valkey_pid)
        wall = after[0] - before[0]
        result["server_core_share"] = (after[1] - before[1]) / wall
        result["us_per_request"] = {
            "server": 1e6 * (after[1] - before[1]) / max(1, result["requests"]),
            "valkey": 1e6 * (after[2] - before[2]) / max(1, result["requests"]),
        }
        single = load(base + PATH, args.latency_seconds, 1)
        result["c1_p50_us"], result["c1_p99_us"] = single["p50_us"], single["p99_us"]
        return result
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _plain_env() -> dict[str, str]:
    """This environment without OTEL_ variables: no variant may trace unless it says so."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def receiver_env(url: str, prefix: str, spool: Path, **extra: str) -> dict[str, str]:
    """A measured `rtt receiver`: Basic auth on, warnings only, its own spool."""
    return {
        **_plain_env(),
        "RTT_REDIS_URL": url,
        "RTT_KEY_PREFIX": prefix,
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_LOG_LEVEL": "warning",
        "RTT_BASIC_AUTH": f"{USER}:{PASSWORD}",
        "RTT_SPOOL_DIR": str(spool),
        **extra,
    }


def _variants(url: str, prefix: str, tmp: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    me = [sys.executable, "-m", "bench.receiver"]
    plain = _plain_env()
    env = receiver_env(url, prefix, Path(tmp) / "spool")
    found = {
        "bare": ([*me, "bare", "--loop", "uvloop"], plain),
        "bare-asyncio": ([*me, "bare", "--loop", "asyncio"], plain),
        "receiver": ([sys.executable, "-m", "receiver"], env),
        "naive": ([*me, "naive", "--redis-url", url, "--stream", f"{prefix}:naive"], plain),
        # Spans made and dropped (no exporter): what tracing costs the receiver when on.
        "receiver-otel": (
            [sys.executable, "-m", "receiver"],
            {
                **env,
                "RTT_SPOOL_DIR": str(Path(tmp) / "spool-otel"),
                "OTEL_TRACES_EXPORTER": "none",
            },
        ),
    }
    if _fastapi_installed():
        found["fastapi"] = ([*me, "fastapi", "--redis-url", url, "--stream", f"{prefix}:fa"], plain)
    return found


def _run(args: argparse.Namespace) -> int:
    from redis import Redis

    from shared.embedded import EmbeddedValkey, free_port
    from shared.keys import Keys

    load: Load = _wrk_load if wrk.available() and not args.python_client else _python_load
    if load is _python_load:
        print(
            "load: the Python client (wrk not found; `apt-get install wrk`). It saturates "
            "before the server does: the ratios below understate the differences."
        )
    else:
        print(f"load: wrk, one thread on core {LOAD_CORE}; servers on core {SERVER_CORE}")
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        assert valkey.process is not None
        if _cores() >= 2:
            os.sched_setaffinity(valkey.process.pid, {LOAD_CORE})
        prefix = f"bench{os.getpid()}"
        variants = _variants(valkey.url, prefix, tmp)
        for name in args.only or ():
            if name not in variants:
                raise SystemExit(f"unknown variant {name!r}; known: {', '.join(variants)}")
        chosen = {n: v for n, v in variants.items() if not args.only or n in args.only}
        # Rounds alternate, so whatever else the machine does weighs on every variant alike.
        for _ in range(args.rounds):
            for name, (server, env) in chosen.items():
                port = free_port()
                env = {**env, "RTT_PORT": str(port)}
                results.setdefault(name, []).append(
                    _measure(server, env, args, load, valkey.process.pid)
                )
        redis = Redis.from_url(valkey.url)
        try:
            on_stream = redis.xlen(Keys(prefix).events())
        finally:
            redis.close()
    _report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.chart:
        _chart(results, Path(args.chart))
    answered = sum(r["requests"] for r in results.get("receiver", []))
    bad = sum(r["non_2xx"] for rs in results.values() for r in rs)
    print(f"non-204 answers: {bad}; receiver 204s counted {answered}, on its stream {on_stream}")
    # Every 204 counted is on the stream (warm-ups add more): nothing answered and lost.
    return 0 if bad == 0 and on_stream >= answered else 1


def _ratios(
    rounds: list[dict[str, Any]], base: list[dict[str, Any]]
) -> tuple[list[float], list[float]]:
    """Per round: requests/s over bare's, and bare's server CPU per request over this one's
    (what the ratio would be if each server had a core of its own; robust to the load)."""
    pairs = list(zip(rounds, base, strict=True))
    rates = [r["rate"] / b["rate"] for r, b in pairs]
    cpu = [
        b["us_per_request"]["server"] / max(1e-9, r["us_per_request"]["server"]) for r, b in pairs
    ]
    return rates, cpu


def _report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    base = results.get("bare")
    print(
        f"{args.rounds} rounds x {args.seconds:g} s at {args.concurrency} connections, "
        f"then {args.latency_seconds:g} s at 1; {os.cpu_count()} cores"
    )
    header = (
        f"{'variant':14} {'req/s (rounds)':34} {'ratio':>6} {'core':>5} "
        f"{'p99 c=64':>9} {'p50/p99 c=1':>15} {'us/req srv+valkey':>18} {'cpu ratio':>9}"
    )
    print(header)
    for name, rounds in results.items():
        rates = " ".join(f"{r['rate']:.0f}" for r in rounds)
        ratio = cpu_ratio = ""
        if base is not None:
            rate_ratios, cpu_ratios = _ratios(rounds, base)
            ratio = f"{statistics.median(rate_ratios):.2f}"
            cpu_ratio = f"{statistics.median(cpu_ratios):.2f}"
        share = statistics.median(r["server_core_share"] for r in rounds)
        p99 = statistics.median(r["p99_us"] for r in rounds) / 1000
        c1 = (
            statistics.median(r["c1_p50_us"] for r in rounds) / 1000,
            statistics.median(r["c1_p99_us"] for r in rounds) / 1000,
        )
        cost = (
            statistics.median(r["us_per_request"]["server"] for r in rounds),
            statistics.median(r["us_per_request"]["valkey"] for r in rounds),
        )
        print(
            f"{name:14} {rates:34} {ratio:>6} {share:5.0%} {p99:7.2f}ms "
            f"{c1[0]:6.2f}/{c1[1]:5.2f}ms {cost[0]:8.1f} + {cost[1]:5.1f} {cpu_ratio:>9}"
        )
    if base is not None:
        for name, rounds in results.items():
            if name == "bare":
                continue
            rate_ratios, cpu_ratios = _ratios(rounds, base)
            print(
                f"{name}/bare per round: req/s {' '.join(f'{x:.2f}' for x in rate_ratios)}; "
                f"cpu {' '.join(f'{x:.2f}' for x in cpu_ratios)}"
            )
        low = [r["server_core_share"] for r in base if r["server_core_share"] < 0.9]
        if low:
            print(
                f"warning: the baseline server had under 90 % of its core in {len(low)} "
                "round(s): the load, not the server, set the pace there"
            )
    print("ratio: median over rounds of variant/bare in the same round (bare: aiohttp, uvloop)")
    print(
        "cpu ratio: median over rounds of bare's server CPU per request over the variant's: "
        "the ratio if each server had a core of its own"
    )


def _chart(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Requests/s (each round a dot, the median a bar) and p99 at 64 and p50 at 1 connection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (rate_ax, latency_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(names):
        rates = [r["rate"] for r in results[name]]
        rate_ax.bar(i, statistics.median(rates), color="#4c78a8")
        rate_ax.plot([i] * len(rates), rates, "k.", markersize=4)
    rate_ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    rate_ax.set_ylabel("requests/s (median bar, rounds as dots)")
    rate_ax.set_title("throughput, 64 connections")
    width = 0.4
    for offset, key, label in (
        (-width / 2, "p99_us", "p99, 64 conn."),
        (width / 2, "c1_p50_us", "p50, 1 conn."),
    ):
        values = [statistics.median(r[key] for r in results[n]) / 1000 for n in names]
        latency_ax.bar([i + offset for i in range(len(names))], values, width, label=label)
    latency_ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    latency_ax.set_ylabel("ms")
    latency_ax.set_yscale("log")
    latency_ax.set_title("latency")
    latency_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench receiver", description=__doc__)
    parser.add_argument(
        "mode", nargs="?", default="run", choices=["run", "bare", "naive", "fastapi", "load"]
    )
    # The servers take their port as the receiver does.
    parser.add_argument("--port", type=int, default=int(os.environ.get("RTT_PORT", "0")))
    parser.add_argument("--url")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--redis-url")
    parser.add_argument("--stream")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="variants to run (default: all)")
    parser.add_argument("--python-client", action="store_true", help="load from Python, not wrk")
    parser.add_argument("--json", help="write every round's figures to this file")
    parser.add_argument("--chart", help="draw requests/s and latency per variant to this PNG")
    args = parser.parse_args(argv)
    if args.mode == "bare":
        _serve_bare(args.port, args.loop)
        return 0
    if args.mode == "naive":
        _serve_naive(args.port, args.redis_url, args.stream)
        return 0
    if args.mode == "fastapi":
        _serve_fastapi(args.port, args.redis_url, args.stream)
        return 0
    if args.mode == "load":
        print(json.dumps(asyncio.run(_load(args.url, args.seconds, args.concurrency))))
        return 0
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
