"""The benchmarks still run and still check what they count; their figures are not judged
here (a wall-clock threshold in a test measures the machine, not the code)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_receiver_bench_runs_its_variants_and_finds_every_204_stored() -> None:
    out = _bench(
        "receiver",
        "--rounds",
        "1",
        "--seconds",
        "1",
        "--latency-seconds",
        "1",
        "--warmup",
        "0.2",
        "--only",
        "bare",
        "receiver",
        "naive",
    )
    for variant in ("bare", "receiver", "naive"):
        assert any(line.startswith(variant + " ") for line in out.splitlines()), out
    assert "non-204 answers: 0" in out


@pytest.mark.parametrize("name", ["worker", "alerts"])
def test_consumer_benches_run(name: str) -> None:
    assert "ratio" in _bench(name, "--events", "2000", "--rounds", "1")


def test_scaling_bench_runs_every_part_and_finds_every_204_stored() -> None:
    parts = ["workers", "receiver", "replicas"] if shutil.which("wrk") else ["workers"]
    out = _bench(
        "scaling",
        "--parts",
        *parts,
        "--rounds",
        "1",
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--events",
        "300",
    )
    assert "-- workers --" in out
    assert out.count("ratio: median over rounds") == len(parts), out
    if "receiver" in parts:
        assert out.count("non-204 or failed requests: 0;") == 2, out


def test_memory_bench_drains_a_backlog_and_samples_both_processes() -> None:
    out = _bench("memory", "--backlog", "2000", "--minutes", "0.1", "--rate", "50")
    assert "worker: RSS start" in out
    assert "receiver: RSS start" in out
