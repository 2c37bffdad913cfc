"""What a second receiver process, a second worker, or a replica to wait for buys.

`python -m bench scaling` runs three parts, each a ratio to a baseline of the same run,
rounds interleaved:

- `receiver`: `rtt receiver --processes 1` against `--processes 2` under wrk (one
  thread, 64 connections, a distinct event per request, Basic auth), Valkey with AOF as
  `rtt serve` runs it. wrk gets core 0; Valkey core 1 when there are four cores or more,
  else it shares core 0 with wrk; the receivers get the cores left (`own cores`). On a
  two-core machine that is one core, so each variant also runs unpinned (`all cores`),
  where two processes can use both cores but compete with wrk and Valkey for them.
- `workers`: one `rtt worker` against two draining the same backlog (the built-in alerts
  consumer; each transcription's Started, Stopped and Available, one transcription in ten
  stopped by an error, so alerting) on a three-master Valkey Cluster with `--shards`
  streams, or on one Valkey (`--topology single`). Each worker gets its own core when
  there are enough (Valkey the rest); otherwise nothing is pinned. The rate is taken
  between 10 % and 90 % of the backlog acknowledged, so start-up and the tail are out.
- `replicas`: the receiver storing into a master with one replica, `RTT_STORE_REPLICAS=0`
  against `1` (every flush followed by `WAIT 1`), under wrk as in `receiver`, then at one
  connection for latency.

Each line gives the CPU share (of one core) of every process that could bound it: the
receiver processes, the workers, Valkey, wrk; and, in brackets, how long the receivers or
workers were ready to run but waited for a core (summed over their threads). A process
near 100 % of its core is the bound; a long wait means the machine's other work is; when
neither, the round trips between them are.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import _wrk as wrk
from bench._http import wait_up
from bench._proc import cpu_s
from bench.receiver import AUTH, PATH, _template, receiver_env
from shared.keys import Keys

__all__ = ["main"]

PARTS = ("receiver", "workers", "replicas")


# --- CPU accounting ----------------------------------------------------------------------


def _tasks(pid: int) -> list[Path]:
    """The threads of `pid` under /proc; none once it has ended."""
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (a `--processes` receiver is a supervisor and children)."""
    found = [pid]
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found.extend(_tree(int(child)))
    return found


def _tree_cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            total += cpu_s(pid)
    return total


def _waited_s(pids: Sequence[int]) -> float:
    """Seconds the threads of `pids` were ready to run but waited for a core (schedstat):
    a share near or above their CPU share means the machine, not they, set the pace."""
    total = 0
    for pid in pids:
        for task in _tasks(pid):
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _children_cpu_s() -> float:
    """CPU of this process's waited-for children: wrk's, once its run returned."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _pin(pid: int, cores: Sequence[int] | None) -> None:
    """Pin `pid` and its threads (Valkey has a few) to `cores`; None leaves it free."""
    if cores is None:
        return
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), set(cores))


def _preexec(cores: Sequence[int] | None) -> Any:
    if cores is None:
        return None
    return lambda: os.sched_setaffinity(0, set(cores))


def _share(seconds: float, cpu: float) -> str:
    return f"{cpu / seconds:.0%}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# --- receiver --processes 1 and 2 ---------------------------------------------------------


def _load_receiver(
    env: dict[str, str],
    *,
    cores: Sequence[int] | None,
    load_core: int | None,
    valkey_pids: Sequence[int],
    args: argparse.Namespace,
    latency: bool = False,
) -> dict[str, Any]:
    """One receiver started, warmed, loaded by wrk; its rate and every process's CPU share."""
    from shared.embedded import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver"],
        env={**env, "RTT_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        preexec_fn=_preexec(cores),
    )
    body = _template()
    try:
        wait_up(base + "/readyz")
        run = {"body": body, "connections": args.connections, "core": load_core, "auth": AUTH}
        wrk.run_wrk(base + PATH, **{**run, "seconds": args.warmup})
        servers = _tree(process.pid)
        before = time.perf_counter(), _tree_cpu_s(servers), _tree_cpu_s(valkey_pids)
        waited = _waited_s(servers)
        load_before = _children_cpu_s()
        result = wrk.run_wrk(base + PATH, **{**run, "seconds": args.seconds})
        load_cpu = _children_cpu_s() - load_before
        wall = time.perf_counter() - before[0]
        result["cpu"] = {
            "receiver": (_tree_cpu_s(servers) - before[1]) / wall,
            "valkey": (_tree_cpu_s(valkey_pids) - before[2]) / wall,
            "wrk": load_cpu / wall,
        }
        result["waited"] = (_waited_s(servers) - waited) / wall
        requests = max(1, result["requests"])
        result["us_per_request"] = 1e6 * result["cpu"]["receiver"] * wall / requests
        result["processes"] = len(servers)
        if latency:
            single = wrk.run_wrk(base + PATH, **{**run, "connections": 1, "seconds": 3})
            result["c1_p50_us"], result["c1_p99_us"] = single["p50_us"], single["p99_us"]
        return result
    finally:
        _stop(process)


def _layouts(cores: list[int]) -> dict[str, tuple[int | None, list[int] | None, list[int] | None]]:
    """Name -> (wrk's core, Valkey's cores, the receivers' cores); None: not pinned."""
    if len(cores) < 2:
        return {"all cores": (None, None, None)}
    load = cores[0]
    valkey = [cores[1]] if len(cores) >= 4 else [load]
    servers = [c for c in cores if c != load and c not in valkey]
    return {"own cores": (load, valkey, servers), "all cores": (load, None, None)}


def _part_receiver(args: argparse.Namespace, tmp: Path) -> bool:
    from redis import Redis

    from shared.embedded import EmbeddedValkey

    cores = _cores()
    layouts = _layouts(cores)
    prefix = f"scale{os.getpid()}"
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with EmbeddedValkey(tmp / "valkey-receiver") as valkey:
        assert valkey.process is not None
        for layout, (load, valkey_cores, servers) in layouts.items():
            print(f"  {layout}: wrk on {load}, Valkey on {valkey_cores}, receivers on {servers}")
        for n in range(args.rounds):
            for layout, (load, valkey_cores, servers) in layouts.items():
                _pin(valkey.process.pid, valkey_cores or cores)
                # Alternate which goes first, so neither always meets a warmer Valkey.
                for processes in (1, 2) if n % 2 == 0 else (2, 1):
                    spool = tmp / f"spool-{n}-{layout[:3]}-{processes}"
                    env = receiver_env(valkey.url, prefix, spool, RTT_PROCESSES=str(processes))
                    result = _load_receiver(
                        env,
                        cores=servers,
                        load_core=load,
                        valkey_pids=[valkey.process.pid],
                        args=args,
                    )
                    results.setdefault((layout, processes), []).append(result)
        with Redis.from_url(valkey.url) as redis:
            stored = redis.xlen(Keys(prefix).events())
    print(
        f"{'layout':10} {'processes':>9} {'req/s per round':28} {'ratio':>6} "
        f"{'CPU: receivers':>15} {'(waited)':>8} {'Valkey':>7} {'wrk':>5} {'µs/req':>7}  p99"
    )
    for (layout, processes), rounds in results.items():
        base = results[(layout, 1)]
        ratios = [r["rate"] / b["rate"] for r, b in zip(rounds, base, strict=True)]
        print(
            f"{layout:10} {processes:>9} {_rates(rounds):28} "
            f"{statistics.median(ratios):>6.2f} "
            f"{_median_share(rounds, 'receiver'):>15} {_median_waited(rounds):>8} "
            f"{_median_share(rounds, 'valkey'):>7} {_median_share(rounds, 'wrk'):>5} "
            f"{statistics.median(r['us_per_request'] for r in rounds):>7.0f}  "
            f"{statistics.median(r['p99_us'] for r in rounds) / 1000:.1f} ms"
        )
    print("ratio: median over rounds of processes 2 / processes 1, same layout, same round;")
    print("µs/req: CPU of the receiver processes per request")
    return _all_stored(results.values(), stored)


def _rates(rounds: list[dict[str, Any]]) -> str:
    return " · ".join(f"{r['rate']:,.0f}" for r in rounds)


def _median_share(rounds: list[dict[str, Any]], name: str) -> str:
    return f"{statistics.median(r['cpu'][name] for r in rounds):.0%}"


def _median_waited(rounds: list[dict[str, Any]]) -> str:
    return f"({statistics.median(r['waited'] for r in rounds):.0%})"


def _all_stored(runs: Any, stored: int) -> bool:
    rounds = [r for rs in runs for r in rs]
    answered = sum(r["requests"] for r in rounds)
    bad = sum(r["non_2xx"] + r["socket_errors"] for r in rounds)
    print(f"  non-204 or failed requests: {bad}; 204s counted {answered}, on the stream {stored}")
    # Every 204 is on the stream (the warm-ups add more): nothing answered and lost.
    return bool(bad == 0 and stored >= answered)


# --- one and two workers ------------------------------------------------------------------


def _lifecycles(count: int, tag: str) -> Iterator[tuple[str, str, bytes]]:
    """(callId, eventType, body): Started, Stopped, Available of one transcription after
    another; one transcription in ten Stopped by an error (an alert), the rest closed."""
    import msgspec

    from rtt.samples import sample_event

    for n in range(count):
        call, transcription = f"c-{tag}-{n // 3}", f"t-{tag}-{n // 3}"
        kind = ("started", "stopped", "available")[n % 3]
        cause = ("error" if (n // 3) % 10 == 0 else "closed") if kind == "stopped" else None
        event = sample_event(kind, cause=cause, call_id=call, transcription_id=transcription)
        yield call, event["eventType"], msgspec.json.encode(event)


def _sync_client(url: str) -> Any:
    """A blocking client for the bench's own reads and writes: cluster-aware when it must be."""
    from redis import Redis
    from redis.cluster import RedisCluster

    if url.startswith("redis+cluster://"):
        host, port = url.removeprefix("redis+cluster://").split(":")
        return RedisCluster(host=host, port=int(port))
    return Redis.from_url(url)


def _fill(redis: Any, keys: Keys, count: int, tag: str) -> None:
    from shared.entries import StreamEntry

    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for n, (call, kind, body) in enumerate(_lifecycles(count, tag)):
        fields = StreamEntry(kind, body, now_ms, f"r{n}").to_fields()
        pipe.xadd(keys.events(keys.shard_of(call)), fields)
        if n % 2000 == 1999:
            pipe.execute()
            pipe = redis.pipeline(transaction=False)
    pipe.execute()


def _acked(redis: Any, keys: Keys) -> int:
    """Entries the `alerts` group has read and acknowledged, over every shard."""
    done = 0
    for stream in keys.event_streams():
        for group in redis.xinfo_groups(stream):
            if group["name"] in (b"alerts", "alerts"):
                done += int(group["entries-read"] or 0) - int(group["pending"])
    return done


def _drain(
    url: str, prefix: str, shards: int, workers: int, count: int, cores: list[int] | None
) -> dict[str, Any]:
    """`workers` worker processes on a filled backlog; rate between 10 % and 90 % done."""

    keys = Keys(prefix, shards)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "RTT_REDIS_URL": url,
        "RTT_KEY_PREFIX": prefix,
        "RTT_SHARDS": str(shards),
        "RTT_LOG_FORMAT": "json",
        "RTT_LOG_LEVEL": "warning",
        "RTT_WORKER_METRICS_PORT": "0",
    }
    redis = _sync_client(url)
    try:
        _fill(redis, keys, count, prefix)
        started = [
            subprocess.Popen(
                [sys.executable, "-m", "worker"],
                env={**env, "RTT_WORKER_ID": f"{prefix}-w{i}"},
                stdout=subprocess.DEVNULL,
                preexec_fn=_preexec([cores[i]] if cores else None),
            )
            for i in range(workers)
        ]
        pids = [p.pid for p in started]
        # The workers' start is the fallback first mark: a small backlog can be 90 % done
        # by the first sample, which would leave no interval between the two marks.
        marks = {"start": (time.perf_counter(), 0, 0.0, 0.0)}
        deadline = time.monotonic() + 1800
        try:
            while time.monotonic() < deadline:
                done = _acked(redis, keys)
                now = time.perf_counter(), done, _tree_cpu_s(pids), _waited_s(pids)
                if done >= count * 0.9:
                    marks["to"] = now
                    break
                if done >= count * 0.1 and "from" not in marks:
                    marks["from"] = now
                time.sleep(0.2)
            else:
                raise TimeoutError(f"{workers} workers did not drain {count} entries")
        finally:
            for process in started:
                _stop(process)
    finally:
        redis.close()
    first = marks.get("from", marks["start"])
    (t0, done0, cpu0, wait0), (t1, done1, cpu1, wait1) = first, marks["to"]
    return {
        "rate": (done1 - done0) / (t1 - t0),
        "seconds": t1 - t0,
        "workers_cpu": cpu1 - cpu0,
        "waited": (wait1 - wait0) / (t1 - t0),
        "us_per_event": 1e6 * (cpu1 - cpu0) / max(1, done1 - done0),
    }


def _part_workers(args: argparse.Namespace, tmp: Path) -> bool:
    cores = _cores()
    # Each worker on its own core, Valkey on the rest, when the machine has enough of them.
    pinned = len(cores) >= 3
    worker_cores = cores[1:3] if pinned else None
    with _topology(args.topology, tmp, args.shards) as (url, valkey_pids):
        if pinned:
            for pid in valkey_pids:
                _pin(pid, [cores[0], *cores[3:]])
        print(
            f"  {args.topology}: {args.shards} shards, {args.events:,} events a round; "
            + (f"workers on cores {worker_cores}" if pinned else "nothing pinned")
        )
        results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for n in range(args.rounds):
            for workers in (1, 2) if n % 2 == 0 else (2, 1):
                prefix = f"scale{os.getpid()}r{n}w{workers}"
                valkey_before = _tree_cpu_s(valkey_pids)
                result = _drain(url, prefix, args.shards, workers, args.events, worker_cores)
                # Valkey's CPU over the whole drain (fill included), per entry.
                result["valkey_cpu"] = _tree_cpu_s(valkey_pids) - valkey_before
                results[workers].append(result)
    print(
        f"{'workers':>7} {'events/s per round':30} {'ratio':>6} {'CPU: workers':>13} "
        f"{'(waited)':>9} {'µs/event: workers':>18} {'Valkey':>7}"
    )
    for workers, rounds in results.items():
        ratios = [r["rate"] / b["rate"] for r, b in zip(rounds, results[1], strict=True)]
        share = statistics.median(r["workers_cpu"] / r["seconds"] for r in rounds)
        cost = statistics.median(r["us_per_event"] for r in rounds)
        valkey = statistics.median(1e6 * r["valkey_cpu"] / args.events for r in rounds)
        print(
            f"{workers:>7} {_rates(rounds):30} {statistics.median(ratios):>6.2f} "
            f"{share:>13.0%} {_median_waited(rounds):>9} {cost:>18.0f} {valkey:>7.0f}"
        )
    print("ratio: median over rounds of the drain rate / one worker's in the same round;")
    print("µs/event: CPU per event of the workers (drain) and of Valkey (fill and drain)")
    return True


@contextlib.contextmanager
def _topology(name: str, tmp: Path, shards: int) -> Iterator[tuple[str, list[int]]]:
    """A Valkey Cluster of three masters, or one Valkey: its URL and server pids."""
    from shared.embedded import EmbeddedValkey

    if name == "single":
        with EmbeddedValkey(tmp / "valkey-workers", appendonly=False) as valkey:
            assert valkey.process is not None
            yield valkey.url, [valkey.process.pid]
        return
    from redis.crc import key_slot

    from tests.cluster import EmbeddedCluster

    with EmbeddedCluster(tmp / "cluster") as cluster:
        # Hash tags {0}..{S-1} do not spread evenly over evenly split slots: say how.
        streams = Keys("rtt", shards).event_streams()
        owners = [cluster.master_of_slot(key_slot(s.encode())).port for s in streams]
        spread = [owners.count(m.port) for m in cluster.masters]
        print(f"  streams per master: {' · '.join(map(str, spread))}")
        yield cluster.url, [n.process.pid for n in cluster.nodes if n.process is not None]


# --- RTT_STORE_REPLICAS 0 and 1 -----------------------------------------------------------


def _part_replicas(args: argparse.Namespace, tmp: Path) -> bool:
    from redis import Redis

    from shared.embedded import EmbeddedValkey

    cores = _cores()
    load, _, servers = _layouts(cores).get("own cores", (None, None, None))
    prefix = f"repl{os.getpid()}"
    results: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    with (
        EmbeddedValkey(tmp / "master") as master,
        EmbeddedValkey(
            tmp / "replica", extra_args=["--replicaof", "127.0.0.1", str(master.port)]
        ) as replica,
    ):
        assert master.process is not None
        assert replica.process is not None
        _wait_synced(master.url)
        pids = [master.process.pid, replica.process.pid]
        for pid in pids:
            _pin(pid, [load] if load is not None else None)
        for n in range(args.rounds):
            for replicas in (0, 1) if n % 2 == 0 else (1, 0):
                env = receiver_env(
                    master.url,
                    prefix,
                    tmp / f"spool-repl-{n}-{replicas}",
                    RTT_STORE_REPLICAS=str(replicas),
                )
                result = _load_receiver(
                    env, cores=servers, load_core=load, valkey_pids=pids, args=args, latency=True
                )
                results[replicas].append(result)
        with Redis.from_url(master.url) as redis:
            stored = redis.xlen(Keys(prefix).events())
    print(
        f"{'replicas':>8} {'req/s per round':28} {'ratio':>6} {'p99 c=64':>9} "
        f"{'p50 / p99 c=1':>15} {'CPU: receiver':>14} {'(waited)':>8} {'Valkey x2':>10} "
        f"{'wrk':>5} {'µs/req':>7}"
    )
    for replicas, rounds in results.items():
        ratios = [r["rate"] / b["rate"] for r, b in zip(rounds, results[0], strict=True)]
        p99 = statistics.median(r["p99_us"] for r in rounds) / 1000
        c1 = (
            statistics.median(r["c1_p50_us"] for r in rounds) / 1000,
            statistics.median(r["c1_p99_us"] for r in rounds) / 1000,
        )
        print(
            f"{replicas:>8} {_rates(rounds):28} "
            f"{statistics.median(ratios):>6.2f} {p99:>7.1f}ms {c1[0]:>6.2f} / {c1[1]:5.2f}ms "
            f"{_median_share(rounds, 'receiver'):>14} {_median_waited(rounds):>8} "
            f"{_median_share(rounds, 'valkey'):>10} {_median_share(rounds, 'wrk'):>5} "
            f"{statistics.median(r['us_per_request'] for r in rounds):>7.0f}"
        )
    print("ratio: median over rounds of RTT_STORE_REPLICAS=1 / =0 in the same round")
    return _all_stored(results.values(), stored)


def _wait_synced(url: str, timeout_s: float = 30) -> None:
    from redis import Redis

    deadline = time.monotonic() + timeout_s
    with Redis.from_url(url) as redis:
        while not (redis.set("scaling-sync", 1) and redis.execute_command("WAIT", 1, 100)):
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not sync in time")


# --- the run -------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scaling", description=__doc__)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk run per variant")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--events", type=int, default=30_000, help="backlog per worker round")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--topology", choices=["cluster", "single"], default="cluster")
    args = parser.parse_args(argv)
    if not wrk.available() and set(args.parts) & {"receiver", "replicas"}:
        print("wrk not found (`apt-get install wrk`): the receiver parts need it", file=sys.stderr)
        return 2
    print(f"{len(_cores())} cores; every figure a ratio within this run, rounds interleaved")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            print(f"-- {part} --", flush=True)
            ok = {"receiver": _part_receiver, "workers": _part_workers, "replicas": _part_replicas}[
                part
            ](args, Path(tmp)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
