"""Instructions per request of a receiver variant, counted by callgrind: load-independent.

`python -m bench instructions` starts its own Valkey, then each variant of `bench receiver`
under `valgrind --tool=callgrind` with instrumentation off, warms it up, switches counting
on for a fixed load from wrk (or the Python client), off again, and divides the server
process's instructions by the requests answered. The count does not depend on what else
the machine runs (wall-clock ratios do), so it is the figure to guide a change by; the
batch size does depend on the concurrency, hence one figure per connection count.

Needs valgrind (`apt-get install valgrind`). Minutes long: run only when named.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import _wrk as wrk
from bench._http import wait_up
from bench.receiver import AUTH, PATH, _template, _variants

__all__ = ["main"]

_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _count(out_dir: Path) -> int:
    """The instructions of the dumps written so far (a dump per `callgrind_control -d`)."""
    total = 0
    for path in out_dir.glob("callgrind.out*"):
        found = _TOTALS.search(path.read_bytes())
        if found:
            total += int(found[1])
    return total


def _measure(
    server: list[str],
    env: dict[str, str],
    url: str,
    seconds: float,
    connections: int,
    keep: Path | None = None,
) -> tuple[int, int]:
    """(instructions, requests) of one counted load on a fresh server under callgrind;
    its callgrind files are copied to `keep` (for callgrind_annotate) when given."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out.%p",
            *server,
        ]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            base = url.rsplit("/", 1)[0]
            wait_up(base + "/healthz", timeout_s=180)
            body = _template()
            wrk.run_wrk(url, body=body, seconds=2, connections=connections, core=None, auth=AUTH)
            _control(process.pid, "-i", "on")
            result = wrk.run_wrk(
                url, body=body, seconds=seconds, connections=connections, core=None, auth=AUTH
            )
            _control(process.pid, "-i", "off")
            # The dump of the counted span; the dump at exit adds only what ran after it.
            _control(process.pid, "-d")
            instructions = _count(out)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                for path in out.glob("callgrind.out*"):
                    shutil.copy(path, keep / path.name)
            if result["non_2xx"] or result["socket_errors"]:
                print(f"warning: {result['non_2xx']} non-2xx, {result['socket_errors']} errors")
            return instructions, int(result["requests"])
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench instructions", description=__doc__)
    parser.add_argument("--only", nargs="+", default=["bare", "receiver"])
    parser.add_argument("--connections", nargs="+", type=int, default=[64, 1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="copy the callgrind files here")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or not wrk.available():
        print("needs valgrind and wrk (apt-get install valgrind wrk)")
        return 2
    from shared.embedded import EmbeddedValkey, free_port

    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp) / "valkey") as valkey:
        prefix = f"bench{os.getpid()}"
        variants = _variants(valkey.url, prefix, tmp)
        print(f"{'variant':12} {'conns':>5} {'requests':>9} {'instructions/request':>21}")
        for name in args.only:
            server, env = variants[name]
            for connections in args.connections:
                port = free_port()
                started = time.monotonic()
                instructions, requests = _measure(
                    server,
                    {**env, "RTT_PORT": str(port)},
                    f"http://127.0.0.1:{port}{PATH}",
                    args.seconds,
                    connections,
                    args.keep / f"{name}-c{connections}" if args.keep else None,
                )
                per = instructions / max(1, requests)
                print(
                    f"{name:12} {connections:5} {requests:9} {per:21,.0f}"
                    f"   ({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
