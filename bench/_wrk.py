"""HTTP load from wrk (C, one thread on its own core), the load generator that does not
saturate before the server does. The Python client in `bench.receiver` is the fallback.

Each request carries a distinct event (dedup stays on): a Lua `request()` substitutes a
counter into one encoded event. `done()` prints one JSON line wrk's summary is read from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["available", "run_wrk"]

_SCRIPT = r"""
local template = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH")
local tag = tostring(math.random(1, 1e9))
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end

request = function()
  n = n + 1
  local body = template:gsub("CALL", tag .. "-" .. n)
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    body: bytes,
    seconds: float,
    connections: int,
    core: int | None,
    auth: str = "",
) -> dict[str, Any]:
    """One wrk run against `url`; its JSON summary, with `rate` in requests/s."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "events.lua"
        script.write_text(_SCRIPT)
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        env = {**os.environ, "BENCH_BODY": body.decode(), "BENCH_AUTH": auth}
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
            preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None,
        )
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["seconds"] = summary["duration_us"] / 1e6
    summary["rate"] = summary["requests"] / summary["seconds"]
    return summary
