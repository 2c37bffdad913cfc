"""Instructions per event of the alerts consumer and of a no-op one, counted by callgrind.

`python -m bench alerts` gives ratios of rates and of CPU time, which move with whatever
else the machine runs (its no-op baseline swung from 57,000 to 91,000 events a second
between rounds of one quiet run). Instructions do not: the same drain counts the same
whatever the load, so this is the figure to judge a change to the consumer by.

It fills one stream (the alerts bench's realistic mix, or its storm), then drains it in
a worker process under `valgrind --tool=callgrind` with counting off, once per consumer,
each in its own group: the worker starts, then counting goes on for the drain alone.
What it counts is the worker's own instructions (Valkey's work is not in them).

    python -m bench consumer_instructions [--events 20000] [--stream mix|storm]

Needs valgrind (`apt-get install valgrind`). Minutes long: run only when named.
"""

from __future__ import annotations

import argparse
import asyncio
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from redis.asyncio import Redis

from bench._drain import wait_drained
from bench.alerts import _fill, _noop, _renamed, _settings
from bench.instructions import _control, _count
from shared.embedded import EmbeddedValkey
from shared.keys import Keys
from shared.logs import configure_logging
from shared.loop import run
from worker.alerts import AlertOptions, make_alerts_consumer
from worker.consumers import Consumer
from worker.runtime import Worker

__all__ = ["main"]

_POLL_S = 0.5  # how often the drain looks whether it is done: a cost per second, not per event


def _consumer(name: str, url: str, prefix: str) -> Consumer:
    if name == "noop":
        return _noop("noop")
    options = AlertOptions.from_settings(_settings(url, prefix, "bench-alerts"))
    return _renamed(make_alerts_consumer(options), "alerts")


async def _drain(url: str, prefix: str, name: str, count: int) -> None:
    """The child: a worker running one consumer, told when to start and when to stop."""
    redis = Redis.from_url(url)
    stream = Keys(prefix).events()
    item = _consumer(name, url, prefix)
    worker = Worker(_settings(url, prefix, f"bench-{name}"), redis, [item])
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # counting is on
    task = asyncio.create_task(worker.run())
    await wait_drained(redis, stream, item.name, count, _POLL_S)
    print("done", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # counting is off
    worker.stop()
    await asyncio.wait_for(task, 60)
    await redis.aclose()


def _child(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--consumer", choices=["noop", "alerts"], required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    with open("/dev/null", "wb") as log:
        configure_logging(component="bench", level="info", fmt="json", stream=log)
        run(_drain(args.url, args.prefix, args.consumer, args.events))
    return 0


def _expect(stream: IO[str], word: str, timeout_s: float) -> None:
    """The drain's next line, which must be `word`, within `timeout_s`."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    if not ready:
        raise TimeoutError(f"no {word!r} from the drain in {timeout_s:g} s")
    line = stream.readline().strip()
    if line != word:
        raise RuntimeError(f"the drain said {line!r}, not {word!r}")


def _measure(url: str, prefix: str, name: str, events: int) -> int:
    """The instructions of one consumer's drain of the stream."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/callgrind.out.%p",
            sys.executable,
            "-m",
            "bench.consumer_instructions",
            "child",
            *("--url", url, "--prefix", prefix, "--consumer", name, "--events", str(events)),
        ]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            _expect(process.stdout, "ready", 600)
            _control(process.pid, "-i", "on")
            process.stdin.write("go\n")
            process.stdin.flush()
            _expect(process.stdout, "done", 1800)
            _control(process.pid, "-i", "off")
            _control(process.pid, "-d")
            process.stdin.write("stop\n")
            process.stdin.flush()
            if process.wait(300):
                raise RuntimeError(f"the {name} drain exited {process.returncode}")
            return _count(Path(tmp))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


async def _prepare(url: str, prefix: str, events: int, storm: bool) -> None:
    redis = Redis.from_url(url)
    options = AlertOptions.from_settings(_settings(url, prefix, "bench-alerts"))
    await _fill(redis, Keys(prefix).events(), events, storm, options)
    await redis.aclose()


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "child":
        return _child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench consumer_instructions")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--stream", choices=["mix", "storm"], default="mix")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("needs valgrind (apt-get install valgrind)")
        return 2
    prefix = args.stream
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(tmp, appendonly=False) as server:
        asyncio.run(_prepare(server.url, prefix, args.events, args.stream == "storm"))
        counted = {}
        for name in ("noop", "alerts"):
            started = time.monotonic()
            counted[name] = _measure(server.url, prefix, name, args.events) / args.events
            print(
                f"{args.stream} {name:6} {counted[name]:12,.0f} instructions/event"
                f"   ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    print(f"ratio no-op / alerts, {args.stream}: {counted['noop'] / counted['alerts']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
