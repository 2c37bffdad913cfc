"""Soak: a steady rate for minutes, the worker restarted every minute; nothing lost, nothing
alerted twice, lag back to zero, the receiver's memory flat (the worker's and Valkey's are
printed: Valkey keeps every entry for RTT_STREAM_RETENTION, so it grows with them).

Runs under `make test-reliability` (10 minutes, `RTT_SOAK_S` to change it); `make test`
runs it for 20 s with a restart every 5 s.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from redis import Redis

from shared.embedded import EmbeddedValkey, free_port
from shared.keys import Keys
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import Program, http_status, rtt_env, start_worker
from tests.reliability.sizes import LONG

SOAK_S = float(os.environ.get("RTT_SOAK_S", "600" if LONG else "20"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]
JSON = {"Content-Type": "application/json"}
RATE = 100  # events/s; one in ten alerts


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _post(url: str, body: bytes) -> int:
    return http_status(url, body, JSON)


def test_steady_load_with_a_worker_restarted_every_minute(tmp_path: Path) -> None:
    soak_s = SOAK_S
    restart_every_s = 60.0 if LONG else 5.0
    with EmbeddedValkey(tmp_path / "valkey", appendonly=False) as valkey:
        assert valkey.process is not None
        port = free_port()
        prefix = "soak"
        env = rtt_env(valkey.url, prefix, tmp_path, port=str(port), worker_id="soak-worker")
        receiver = Program(["receiver"], env, tmp_path / "receiver.log")
        workers = [start_worker(env, tmp_path / "worker0.log")]
        url = f"http://127.0.0.1:{port}/realTimeTranscriptionEvents"
        redis = Redis.from_url(valkey.url)
        stream = Keys(prefix).events()
        answered: Counter[int] = Counter()
        sent_204: list[str] = []
        alerting: set[str] = set()
        samples: dict[str, list[float]] = {"receiver": [], "worker": [], "valkey": []}
        max_lag = 0
        stop = threading.Event()

        def load() -> None:
            n, start = 0, time.monotonic()
            while not stop.is_set():
                wait = start + n / RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                call_id = f"c-soak-{n}"
                cause = "error" if n % 10 == 0 else "closed"
                body = sample_body(
                    "stopped", cause=cause, call_id=call_id, transcription_id=f"t-{n}"
                )
                status = _post(url, body)
                answered[status] += 1
                if status == 204:
                    sent_204.append(call_id)
                    if cause == "error":
                        alerting.add(f"t-{n}")
                n += 1

        try:
            wait_for(lambda: http_status(url.rsplit("/", 1)[0] + "/readyz") == 200, 60, "ready")
            wait_for(lambda: workers[-1].named("worker_started"), 60, "worker started")
            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            started = time.monotonic()
            next_restart = started + restart_every_s
            while time.monotonic() - started < soak_s:
                time.sleep(1)
                samples["receiver"].append(_rss_mb(receiver.process.pid))
                samples["worker"].append(_rss_mb(workers[-1].process.pid))
                samples["valkey"].append(_rss_mb(valkey.process.pid))
                groups = {g["name"]: g for g in redis.xinfo_groups(stream)}
                alerts = groups.get(b"alerts")
                if alerts is not None:
                    max_lag = max(max_lag, (alerts.get("lag") or 0) + alerts["pending"])
                if time.monotonic() >= next_restart:
                    next_restart += restart_every_s
                    assert workers[-1].stop(signal.SIGTERM) == 0, workers[-1].text()
                    log = tmp_path / f"worker{len(workers)}.log"
                    workers.append(start_worker(env, log))
            stop.set()
            loader.join(30)

            def drained() -> bool:
                groups = {g["name"]: g for g in redis.xinfo_groups(stream)}
                info = groups[b"alerts"]
                return info.get("lag") == 0 and info["pending"] == 0

            wait_for(drained, 60, "the alerts group caught up")
        finally:
            stop.set()
            for program in workers:
                assert program.stop(signal.SIGTERM) == 0, program.text()
            assert receiver.stop(signal.SIGTERM) == 0, receiver.text()
        on_stream = Counter(
            msgspec.json.decode(fields[b"body"])["callId"] for _, fields in redis.xrange(stream)
        )
        redis.close()
    alerted = Counter(
        line["transcription_id"]
        for program in workers
        for line in program.named("transcription_alert")
    )

    def flat(name: str) -> str:
        values = samples[name]
        return f"{name} {values[0]:.0f} -> peak {max(values):.0f} -> end {values[-1]:.0f} MB"

    lost = [c for c in sent_204 if on_stream[c] != 1]
    twice = [t for t, n in alerted.items() if n > 1]
    sent = sum(answered.values())
    print(
        f"\nsoak {soak_s:.0f} s at {RATE}/s, {len(workers)} worker runs: sent {sent}, "
        f"204 {answered[204]}, on stream {sum(on_stream.values())}, lost or repeated {lost[:10]}; "
        f"alerts {len(alerted)} of {len(alerting)}, twice {twice}; "
        f"max lag+pending {max_lag}; RSS {flat('receiver')}, {flat('worker')}, {flat('valkey')}"
    )
    assert answered == {204: len(sent_204)}
    assert lost == []
    assert set(alerted) == alerting
    assert max(alerted.values()) == 1
    # Flat: the receiver ends near where it settled (a leak grows with the event count).
    settled = samples["receiver"][len(samples["receiver"]) // 4]
    assert samples["receiver"][-1] < settled * 1.5 + 10, flat("receiver")
