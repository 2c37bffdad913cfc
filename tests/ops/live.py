"""A receiver and a worker running as processes, with traffic enough to export every family."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.embedded import free_port
from tests.bodies import SEED_EXAMPLES, sample_body
from tests.helpers import wait_for
from tests.processes import Program, http_status, rtt_env, start_worker

__all__ = ["LivePages", "run_live_pages"]

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class LivePages:
    receiver: str
    worker: str


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def run_live_pages(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[LivePages]:
    port, metrics_port = free_port(), free_port()
    env = rtt_env(
        redis_url, prefix, tmp_path, port=str(port), worker_metrics_port=str(metrics_port)
    )
    receiver = Program(["receiver"], env, tmp_path / "receiver.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(base + "/readyz") == 200, 30, "receiver ready")
        url = base + "/realTimeTranscriptionEvents"
        failing = sample_body("stopped", cause="error", call_id="c-ops", transcription_id="t-ops")
        for body in (SEED_EXAMPLES[0], SEED_EXAMPLES[0], failing, b"{not json"):
            http_status(url, body, JSON)
        wait_for(lambda: worker.named("transcription_alert"), 30, "the alert")
        worker_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for(lambda: http_status(worker_url) == 200, 30, "worker /metrics")
        yield LivePages(receiver=_get(base + "/metrics"), worker=_get(worker_url))
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.text()
        assert receiver.stop(signal.SIGTERM) == 0, receiver.text()
