"""From POST to `transcription_alert`: how long an alert takes, at a steady rate.

`python -m bench e2e` starts Valkey, a receiver and a worker (the built-in alerts consumer
logging to stdout), then posts a realistic mix (10 % Stopped with cause `error`, each of
its own transcription) at a fixed rate, open loop (`bench._openloop`, light enough not to
be the bound): each event leaves at its scheduled time whether or not the previous ones
were answered. An alert's latency runs from its request leaving the client to the
timestamp of its `transcription_alert` line. It prints p50, p99 and the maximum at each
rate, and checks that every alerting event was alerted.
Then where the time went: the rate the client kept (a client that falls behind measures
itself), the receiver's part (POST to its `204`) and the worker's (`204` to the line),
and each process's share of a core while the client posted: the one near 100 % bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._http import wait_up
from bench._openloop import post_at_rate
from bench._proc import cpu_s
from shared.embedded import EmbeddedValkey, free_port

__all__ = ["main"]

PATH = "/realTimeTranscriptionEvents"
_ALERTING_EVERY = 10  # one alerting event in ten, the rest closed or started


def _bodies(count: int, tag: str) -> tuple[list[bytes], dict[str, int]]:
    """The events to post, and for each alerting one its transcription id and index."""
    import msgspec

    from rtt.samples import sample_event

    bodies, alerting = [], {}
    for n in range(count):
        if n % _ALERTING_EVERY == 0:
            transcription = f"t-{tag}-{n}"
            event = sample_event("stopped", cause="error", transcription_id=transcription)
            alerting[transcription] = n
        else:
            kind = "stopped" if n % 2 else "started"
            event = sample_event(kind, cause="closed" if kind == "stopped" else None)
        bodies.append(msgspec.json.encode(event))
    return bodies, alerting


def _percentiles_ms(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and the maximum, in milliseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return 1000 * statistics.median(ordered), 1000 * p99, 1000 * ordered[-1]


def _alert_times(log: Path) -> dict[str, float]:
    found = {}
    for raw in log.read_bytes().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("event") == "transcription_alert":
            stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
            found[line["transcription_id"]] = stamp.timestamp()
    return found


def _wait_consuming(log: Path, timeout_s: float = 30) -> None:
    """Until the worker has started: alerts measure the pipeline, not the worker's start."""
    deadline = time.monotonic() + timeout_s
    while b'"worker_started"' not in log.read_bytes():
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker not started in {timeout_s}s")
        time.sleep(0.1)
    time.sleep(1.0)  # its first XREADGROUP is under way


def _one_rate(rate: float, seconds: float, valkey: EmbeddedValkey, tmp: Path) -> dict[str, Any]:
    port = free_port()
    tag = f"{os.getpid()}-{int(rate)}"
    env = {
        **os.environ,
        "RTT_REDIS_URL": valkey.url,
        "RTT_KEY_PREFIX": f"e2e{tag}",
        "RTT_PORT": str(port),
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_SPOOL_DIR": str(tmp / f"spool{tag}"),
        "RTT_WORKER_METRICS_PORT": "0",
    }
    worker_log = tmp / f"worker{tag}.log"
    with open(worker_log, "wb") as out:
        receiver = subprocess.Popen(
            [sys.executable, "-m", "receiver"], env=env, stdout=subprocess.DEVNULL
        )
        worker = subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=out)
        try:
            wait_up(f"http://127.0.0.1:{port}/readyz")
            _wait_consuming(worker_log)
            bodies, alerting = _bodies(int(rate * seconds), tag)
            assert valkey.process is not None
            pids = {"receiver": receiver.pid, "worker": worker.pid, "Valkey": valkey.process.pid}
            cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
            client_before, started = time.process_time(), time.perf_counter()
            posted = post_at_rate("127.0.0.1", port, PATH, bodies, rate)
            elapsed = time.perf_counter() - started
            shares = {"client": (time.process_time() - client_before) / elapsed}
            shares.update(
                (name, (cpu_s(pid) - cpu_before[name]) / elapsed) for name, pid in pids.items()
            )
            bad = [s for s in posted.statuses if s != 204]
            if bad:
                raise RuntimeError(f"{len(bad)} events not answered 204: {sorted(set(bad))}")
            sent_at, answered_at = posted.sent_at, posted.answered_at
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                alerted = _alert_times(worker_log)
                if len(alerting.keys() & alerted.keys()) == len(alerting):
                    break
                time.sleep(0.2)
        finally:
            for process in (receiver, worker):
                process.send_signal(signal.SIGTERM)
            for process in (receiver, worker):
                process.wait(60)
    alerted = _alert_times(worker_log)
    found = [(alerted[t], n) for t, n in alerting.items() if t in alerted]
    p50, p99, most = _percentiles_ms([at - sent_at[n] for at, n in found])
    span_s = sent_at[-1] - sent_at[0]
    return {
        "rate": rate,
        "events": len(bodies),
        "alerting": len(alerting),
        "alerted": len(found),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": most,
        "sent_per_s": (len(bodies) - 1) / span_s if span_s > 0 else float("inf"),
        "answered_ms": _percentiles_ms([a - s for s, a in zip(sent_at, answered_at, strict=True)]),
        "worker_ms": _percentiles_ms([at - answered_at[n] for at, n in found]),
        "cpu_shares": shares,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[500, 5000])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    lost = 0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        for rate in args.rates:
            result = _one_rate(rate, args.seconds, valkey, Path(tmp))
            lost += result["alerting"] - result["alerted"]
            print(
                f"{rate:6.0f} events/s for {args.seconds:g} s: {result['alerted']} of "
                f"{result['alerting']} alerts; POST -> transcription_alert p50 "
                f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"max {result['max_ms']:.1f} ms"
            )
            answered, worker = result["answered_ms"], result["worker_ms"]
            print(
                f"        sent at {result['sent_per_s']:,.0f}/s (target {rate:,.0f}/s); "
                f"POST -> 204 p50 {answered[0]:.1f} ms, p99 {answered[1]:.1f} ms; "
                f"204 -> transcription_alert p50 {worker[0]:.1f} ms, p99 {worker[1]:.1f} ms"
            )
            shares = ", ".join(f"{k} {v:.0%}" for k, v in result["cpu_shares"].items())
            print(f"        CPU while posting, share of one core: {shares}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
