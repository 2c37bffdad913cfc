"""The benchmarks still run and still check what they count; their figures are not judged
here (a wall-clock threshold in a test measures the machine, not the code)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _bench(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
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


@pytest.mark.parametrize("log", ["memory", "pipe"])
def test_alerts_bench_counts_each_alert_line_and_reports_cpu_ratios(log: str) -> None:
    out = _bench("alerts", "--events", "2000", "--rounds", "2", "--log", log)
    # A line per alerting event and round, counted in what the log received.
    assert re.search(r"alert lines: [\d,]+ counted, 2 x \(mix [\d,]+ \+ storm 2,000\)", out), out
    for scenario in ("mix", "storm"):
        summary = _row(out, f"ratio alerts / no-op, {scenario}")
        assert "cpu ratio" in summary, out
        assert "with Valkey" in summary, out


def _row(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(label))


@pytest.mark.skipif(
    importlib.util.find_spec("faststream") is None, reason="FastStream not installed ([bench])"
)
def test_worker_bench_drains_every_entry_with_each_variant_faststream_included() -> None:
    out = _bench("worker", "--events", "2000", "--rounds", "1")
    assert "every variant read all 2000 entries in every round; none left pending" in out, out
    assert "not installed" not in _row(out, "FastStream, no-op"), out
    assert "faststream " in _row(out, "  round 0:"), out


def test_worker_bench_without_faststream_says_how_to_install_it(tmp_path: Path) -> None:
    # A `faststream` that fails to import, first on the path: FastStream not installed.
    (tmp_path / "faststream").mkdir()
    (tmp_path / "faststream" / "__init__.py").write_text("raise ImportError('not here')\n")
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    out = _bench("worker", "--events", "2000", "--rounds", "1", env=env)
    assert "every variant read all 2000 entries in every round; none left pending" in out, out
    assert "pip install -e '.[bench]'" in _row(out, "FastStream, no-op"), out
    assert "faststream " not in _row(out, "  round 0:"), out


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


def test_e2e_bench_alerts_every_alerting_event_and_says_where_the_time_went() -> None:
    out = _bench("e2e", "--rates", "200", "--seconds", "1")
    row = _row(out, "   200 events/s for 1 s: 20 of 20 alerts;")
    assert "POST -> transcription_alert p50" in row, out
    # Which stage the latency is in, and whether the client kept its rate.
    detail = out.splitlines()[out.splitlines().index(row) + 1]
    assert "sent at " in detail, out
    assert "(target 200/s)" in detail, out
    assert "POST -> 204 p50" in detail, out
    assert "204 -> transcription_alert p50" in detail, out


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_consumer_instructions_bench_counts_both_drains() -> None:
    out = _bench("consumer_instructions", "--events", "300")
    for name in ("noop", "alerts"):
        assert re.search(rf"^mix {name} +[\d,]+ instructions/event", out, re.MULTILINE), out
    assert "ratio no-op / alerts, mix: 0." in out, out
