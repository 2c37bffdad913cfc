"""The three TLS mistakes on every topology, for every program: an untrusted server
certificate (wrong CA), an expired one, and a plain-text client against a TLS port.

On a single node, a Sentinel URL and a Cluster URL, the receiver, the worker, `rtt serve`
on that server and an operator command each say it in one line naming the setting to
change, without a traceback, and at once rather than after waiting for a Redis that will
never answer.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver.server import serve as serve_receiver
from rtt.stats import main as stats_main
from shared.connections import RedisRefused, check_redis, create_redis
from shared.embedded import free_port
from shared.settings import Settings
from tests.alerts.helpers import alerts_consumer
from tests.helpers import LogLines, eventually, wait_for
from tests.processes import Program
from tests.tls_fixtures import cert_paths
from tests.tlsredis import Certificates, TlsCluster, TlsRedis, TlsSentinel
from worker.entry import run_worker

pytestmark = [pytest.mark.managed_redis, pytest.mark.slow]


@dataclass(frozen=True)
class Servers:
    single: TlsRedis
    expired_single: TlsRedis
    sentinel: TlsSentinel
    expired_sentinel: TlsSentinel
    cluster: TlsCluster
    # A cluster node whose certificate has expired: the client never gets past it.
    expired_cluster_node: TlsRedis


@pytest.fixture(scope="module")
def servers(
    tls_server: TlsRedis,
    expired_tls_server: TlsRedis,
    certs: Certificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("tls-failures")
    expired = {"server_cert": certs.expired_server_cert, "server_key": certs.expired_server_key}
    sentinel = TlsSentinel(root / "sentinel", certs)
    expired_sentinel = TlsSentinel(
        root / "expired-sentinel",
        certs,
        sentinel_cert=certs.expired_server_cert,
        sentinel_key=certs.expired_server_key,
    )
    cluster = TlsCluster(root / "cluster", certs)
    node_args = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    node = TlsRedis(
        root / "expired-node", certs, auth_clients=False, extra_args=node_args, **expired
    )
    started = [sentinel.start(), expired_sentinel.start(), cluster.start(), node.start()]
    try:
        yield Servers(tls_server, expired_tls_server, sentinel, expired_sentinel, cluster, node)
    finally:
        for server in started:
            server.stop()


@dataclass(frozen=True)
class Case:
    url: str
    settings: dict[str, str]
    words: str
    setting: str


def _case(servers: Servers, certs: Certificates, topology: str, mistake: str) -> Case:
    urls = {
        "single": (servers.single.url, servers.expired_single.url),
        "sentinel": (servers.sentinel.url, servers.expired_sentinel.url),
        "cluster": (
            servers.cluster.url,
            f"rediss+cluster://127.0.0.1:{servers.expired_cluster_node.port}",
        ),
    }
    good, expired = urls[topology]
    paths = {name: str(path) for name, path in cert_paths(certs).items()}
    if mistake == "wrong-ca":
        paths["redis_tls_ca_path"] = str(certs.other_ca)
        return Case(good, paths, "not trusted", "RTT_REDIS_TLS_CA_PATH")
    if mistake == "expired":
        return Case(expired, paths, "certificate has expired", "RTT_REDIS_TLS_VERIFY")
    plain = good.replace("rediss", "redis", 1)
    return Case(plain, {}, "a TLS port? then use rediss://", "RTT_REDIS_URL")


TOPOLOGIES = ["single", "sentinel", "cluster"]
MISTAKES = ["wrong-ca", "expired", "plain-text"]
CASES = pytest.mark.parametrize(
    ("topology", "mistake"), [(t, m) for t in TOPOLOGIES for m in MISTAKES]
)


@pytest.fixture
def case(servers: Servers, certs: Certificates, topology: str, mistake: str) -> Callable[[], Case]:
    return lambda: _case(servers, certs, topology, mistake)


def _env(case: Case, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"RTT_REDIS_URL": case.url, "RTT_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"}
    env.update({"RTT_" + name.upper(): value for name, value in case.settings.items()})
    env.update({"RTT_SPOOL_DIR": str(tmp_path / "spool"), "RTT_WORKER_METRICS_PORT": "0"})
    return {**env, **extra}


def _assert_names_it(line: str, case: Case) -> None:
    assert case.words in line, line
    assert case.setting in line, line
    assert "Traceback" not in line


@CASES
def test_operator_command(case: Callable[[], Case], capsys: pytest.CaptureFixture[str]) -> None:
    chosen = case()
    flags = ["--redis-url", chosen.url]
    for name, value in chosen.settings.items():
        flags += ["--" + name.replace("_", "-"), value]
    assert stats_main(flags) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("rtt stats: ")
    _assert_names_it(line, chosen)


@CASES
def test_worker_exits_3_with_one_line(case: Callable[[], Case], tmp_path: Path) -> None:
    chosen = case()
    done = subprocess.run(
        [sys.executable, "-m", "worker"],
        env=_env(chosen, tmp_path),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr
    [line] = done.stderr.decode().strip().splitlines()
    assert line.startswith("python -m worker: ")
    _assert_names_it(line, chosen)
    assert b"Traceback" not in done.stdout


@CASES
async def test_worker_in_process_raises_it(
    case: Callable[[], Case], make_settings: Callable[..., Settings]
) -> None:
    chosen = case()
    settings = make_settings(redis_url=chosen.url, **chosen.settings)
    async with asyncio.timeout(30):
        with pytest.raises(RedisRefused) as refused:
            await run_worker(settings, [alerts_consumer(settings)])
    _assert_names_it(str(refused.value), chosen)


@CASES
async def test_receiver_logs_one_line_and_keeps_serving(
    case: Callable[[], Case], make_settings: Callable[..., Settings], logs: LogLines
) -> None:
    chosen = case()
    settings = make_settings(
        redis_url=chosen.url, host="127.0.0.1", port=free_port(), **chosen.settings
    )
    task = asyncio.create_task(serve_receiver(settings))
    try:
        await eventually(lambda: logs.named("redis_refused"), what="line")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [line] = logs.named("redis_refused")
    assert line["level"] == "error"
    _assert_names_it(line["error"], chosen)


@CASES
def test_serve_on_that_server_stops_with_the_line(case: Callable[[], Case], tmp_path: Path) -> None:
    chosen = case()
    env = _env(
        chosen,
        tmp_path,
        RTT_PORT=str(free_port()),
        RTT_HOST="127.0.0.1",
        RTT_DATA_DIR=str(tmp_path / "data"),
    )
    serve = Program(["rtt", "serve"], env, tmp_path / "serve.log")
    try:
        wait_for(lambda: serve.process.poll() is not None, 60, "rtt serve to stop")
    finally:
        code = serve.stop(signal.SIGTERM)
    output = serve.text()
    assert code == 3, output[-3000:]
    # Said once, by rtt serve itself, before a receiver or worker started.
    [line] = output.strip().splitlines()
    assert line.startswith("rtt serve: ")
    _assert_names_it(line, chosen)


async def test_a_cluster_that_is_down_is_waited_for_not_refused(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    """No node reached is "down" on a Cluster URL too (redis-py raises an exception of its
    own there, not a connection error): the worker and receiver wait, commands say so."""
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    settings = make_settings(redis_url=url)
    redis = create_redis(settings)
    try:
        await check_redis(redis, settings)
    finally:
        await redis.aclose()
    assert await asyncio.to_thread(stats_main, ["--redis-url", url]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"rtt stats: cannot reach Redis at {url}")
