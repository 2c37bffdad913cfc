"""Real servers for the tests: one Valkey per session (or RTT_TEST_REDIS_URL), a fresh key
prefix per test, and the structured log lines a user would read."""

from __future__ import annotations

import io
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared import cli_support
from shared.embedded import EmbeddedValkey
from shared.logs import configure_logging, reset_logging
from shared.settings import Settings, load_settings
from shared.signals import STOP_SIGNALS
from tests.cluster import EmbeddedCluster
from tests.helpers import LogLines

# Markers left out of a plain `pytest` run, and the variable that lets each in.
_OPT_IN = {"integrations": "RTT_TEST_INTEGRATIONS", "long": "RTT_TEST_LONG"}

# Fixtures of a real TLS redis-server (Debian's), for the TLS and ACL tests.
pytest_plugins = ["tests.tls_fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of Debian's real parts (promtool, Alertmanager) run under `make
    test-integrations`, which installs them; the minutes-long reliability scenarios under
    `make test-reliability`; `make test` leaves both out. An explicit `-m` decides alone."""
    if config.getoption("markexpr"):
        return
    out = {marker for marker, variable in _OPT_IN.items() if os.environ.get(variable) != "1"}
    left_out = [item for item in items if any(item.get_closest_marker(m) for m in out)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        kept = set(items) - set(left_out)
        items[:] = [item for item in items if item in kept]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("RTT_TEST_REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedValkey(tmp_path_factory.mktemp("valkey"), appendonly=False) as server:
        yield server.url


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A Valkey Cluster for the session: three masters, a replica each (so `WAIT` has
    replicas to count). Tests share it under their own key prefixes; none stops a node."""
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster"), replicas=1) as running:
        yield running


@pytest.fixture
def prefix() -> str:
    """Each test owns the keys under its own prefix, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(redis_url: str, prefix: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "key_prefix": prefix,
            "spool_dir": str(tmp_path / "spool"),
            "worker_metrics_port": 0,
            "block": "100ms",
            "log_format": "json",
        }
        values.update(overrides)
        return load_settings(env={}, overrides=values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[SyncRedis]:
    """For tests that drive child processes and poll from plain (not async) code."""
    with SyncRedis.from_url(redis_url) as client:
        yield client


@pytest.fixture(autouse=True)
def _stop_signals_per_test() -> Iterator[None]:
    """A program run in-process (`shared.loop.run`) ignores stop signals once it is done,
    as a process that is only exiting should; the test process, and what it starts
    later, must not."""
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _logging_per_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commands run in-process (`rtt dlq ...` via `main`) configure logging with loggers
    cached on first use, bound to this test's captured stdout: later tests would write to
    a closed file. Keep them uncached, and start every test from structlog's defaults."""
    monkeypatch.setattr(cli_support, "configure_logging", partial(configure_logging, cache=False))
    yield
    structlog.reset_defaults()
    reset_logging()


@pytest.fixture
def logs() -> LogLines:
    buffer = io.BytesIO()
    configure_logging(component="test", level="debug", fmt="json", stream=buffer, cache=False)
    return LogLines(buffer)
