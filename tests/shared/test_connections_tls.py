"""TLS to Redis through the one connection factory, against a real TLS redis-server.

The server listens on TLS only and checks client certificates (`--tls-auth-clients yes`),
as managed services with mutual TLS do. Each mistake a user can make ends in one line that
names the setting to change.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from rtt.stats import main as stats_main
from shared.connections import RedisRefused, check_redis, create_redis
from shared.embedded import free_port
from shared.keys import Keys
from shared.settings import ConfigError, Settings, load_settings
from tests.alerts.helpers import alerts_consumer
from tests.bodies import sample_body
from tests.helpers import LogLines, eventually
from tests.receiver.helpers import live_receiver, serve_until_logged
from tests.tls_fixtures import cert_paths
from tests.tlsredis import Certificates, TlsRedis
from tests.worker.helpers import running

pytestmark = pytest.mark.managed_redis
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def tls_settings(
    make_settings: Callable[..., Settings], tls_server: TlsRedis, certs: Certificates
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"redis_url": tls_server.url, **cert_paths(certs)}
        values.update(overrides)
        return make_settings(**{k: str(v) for k, v in values.items()})

    return make


async def test_receiver_stores_and_worker_alerts_over_tls_with_a_client_certificate(
    tls_settings: Callable[..., Settings], logs: LogLines
) -> None:
    settings = tls_settings()
    redis = create_redis(settings)
    try:
        await check_redis(redis, settings)
        body = sample_body("stopped", cause="error", call_id="c-tls", transcription_id="t-tls")
        async with live_receiver(settings) as live, aiohttp.ClientSession() as http:
            async with http.post(live.events_url, data=body, headers=JSON) as resp:
                assert resp.status == 204
            async with http.get(live.url + "/readyz") as resp:
                assert (await resp.json())["store"] == "redis"
        stream = Keys(settings.key_prefix).events()
        [(_, fields)] = await redis.xrange(stream)
        assert fields[b"body"] == body
        async with running(settings, redis, [alerts_consumer(settings)]):
            await eventually(
                lambda: asyncio.sleep(0, logs.named("transcription_alert")), what="alert"
            )
        [alert] = logs.named("transcription_alert")
        assert alert["call_id"] == "c-tls"
    finally:
        await redis.aclose()


def test_operator_command_reads_over_tls(
    tls_server: TlsRedis, certs: Certificates, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = stats_main(["--json", "--key-prefix", prefix, *_flags(tls_server.url, certs)])
    assert code == 0
    assert f'"{prefix}:events"' in capsys.readouterr().out


def _flags(url: str, certs: Certificates, client: str = "client", **paths: Path) -> list[str]:
    chosen = {**cert_paths(certs, client=client), **paths}
    flags = ["--redis-url", url]
    for name, path in chosen.items():
        flags += ["--" + name.replace("_", "-"), str(path)]
    return flags


def _one_line_from_stats(flags: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = stats_main(flags)
    captured = capsys.readouterr()
    assert code == 1, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert lines[0].startswith("rtt stats: ")
    return lines[0]


def test_untrusted_server_certificate_names_the_ca_setting(
    tls_server: TlsRedis, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_from_stats(
        _flags(tls_server.url, certs, redis_tls_ca_path=certs.other_ca), capsys
    )
    assert "not trusted" in line
    assert "RTT_REDIS_TLS_CA_PATH" in line
    assert f"127.0.0.1:{tls_server.port}" in line


def test_expired_server_certificate_says_so(
    expired_tls_server: TlsRedis, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_from_stats(_flags(expired_tls_server.url, certs), capsys)
    assert "certificate has expired" in line
    assert "RTT_REDIS_TLS_VERIFY" in line


@pytest.mark.skipif(sys.version_info < (3, 13), reason="strict X.509 checks came in 3.13")
def test_server_certificate_failing_strict_checks_names_the_check_not_the_ca(
    require_tls_redis: None,
    certs: Certificates,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Python 3.13 verifies strictly: a certificate without key identifiers, which minimal
    # scripts still make, is refused although the right CA signed it.
    unkeyed = {"server_cert": certs.unkeyed_server_cert, "server_key": certs.unkeyed_server_key}
    with TlsRedis(tmp_path / "redis", certs, auth_clients=False, **unkeyed) as server:
        line = _one_line_from_stats(_flags(server.url, certs), capsys)
    assert "Missing Authority Key Identifier" in line
    assert "does not hold the CA" not in line
    assert "reissue" in line


def test_plain_text_client_against_a_tls_port_is_told_to_use_rediss(
    tls_server: TlsRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_from_stats(["--redis-url", f"redis://127.0.0.1:{tls_server.port}/0"], capsys)
    assert "rediss://" in line
    assert "RTT_REDIS_URL" in line


def test_missing_client_certificate_names_the_certificate_settings(
    tls_server: TlsRedis, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--redis-url", tls_server.url, "--redis-tls-ca-path", str(certs.ca)]
    line = _one_line_from_stats(flags, capsys)
    assert "client certificate" in line
    assert "RTT_REDIS_TLS_CERT_PATH" in line


@pytest.mark.parametrize(
    ("client", "words"),
    [("other_client", "not signed by a CA the server trusts"), ("expired_client", "expired")],
)
def test_refused_client_certificate_names_it(
    tls_server: TlsRedis,
    certs: Certificates,
    capsys: pytest.CaptureFixture[str],
    client: str,
    words: str,
) -> None:
    line = _one_line_from_stats(_flags(tls_server.url, certs, client=client), capsys)
    assert words in line
    assert "RTT_REDIS_TLS_CERT_PATH" in line


def test_tls_client_against_a_plain_port_ends_within_the_connect_timeout(
    redis_url: str, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = redis_url.replace("redis://", "rediss://", 1)
    line = _one_line_from_stats(
        ["--redis-url", plain, "--redis-tls-ca-path", str(certs.ca)], capsys
    )
    assert "redis://" in line
    assert "plain-text port" in line


def test_checking_can_be_turned_off_for_a_test_server(
    tls_server: TlsRedis, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(tls_server.url, certs, redis_tls_ca_path=certs.other_ca)
    assert stats_main([*flags, "--redis-tls-verify", "false", "--json"]) == 0
    capsys.readouterr()


async def test_receiver_with_an_untrusted_server_says_so_once_and_spools(
    tls_settings: Callable[..., Settings], certs: Certificates, logs: LogLines, tmp_path: Path
) -> None:
    """The receiver does not refuse events over a Redis it cannot use: it keeps them."""
    settings = tls_settings(redis_tls_ca_path=certs.other_ca)
    async with live_receiver(settings) as live, aiohttp.ClientSession() as http:
        for n in range(3):
            body = sample_body("stopped", call_id=f"c-{n}")
            async with http.post(live.events_url, data=body, headers=JSON) as resp:
                assert resp.status == 204
        async with http.get(live.url + "/readyz") as resp:
            assert (await resp.json())["store"] == "spool"
    [spooling] = logs.named("store_spooling")
    assert "CERTIFICATE_VERIFY_FAILED" in spooling["reason"]


async def test_receiver_start_logs_one_line_naming_the_setting(
    tls_settings: Callable[..., Settings], certs: Certificates, logs: LogLines
) -> None:
    settings = tls_settings(redis_tls_ca_path=certs.other_ca, host="127.0.0.1", port=free_port())
    await serve_until_logged(settings, logs, "redis_refused")
    [line] = logs.named("redis_refused")
    assert line["level"] == "error"
    assert "RTT_REDIS_TLS_CA_PATH" in line["error"]


async def test_check_redis_lets_a_down_server_pass(
    make_settings: Callable[..., Settings], certs: Certificates
) -> None:
    """Down is not refused: the worker and receiver wait for a Redis that is restarting."""
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    redis = create_redis(settings)
    try:
        await check_redis(redis, settings)
    finally:
        await redis.aclose()


async def test_refused_tls_raises_redis_refused(
    tls_settings: Callable[..., Settings], certs: Certificates
) -> None:
    settings = tls_settings(redis_tls_ca_path=certs.other_ca)
    redis = create_redis(settings)
    try:
        with pytest.raises(RedisRefused, match="RTT_REDIS_TLS_CA_PATH"):
            await check_redis(redis, settings)
    finally:
        await redis.aclose()


# --- settings: checked before anything connects -------------------------------------------


def test_tls_files_on_a_plain_url_are_a_configuration_error(certs: Certificates) -> None:
    env = {"RTT_REDIS_URL": "redis://h:6379/0", "RTT_REDIS_TLS_CA_PATH": str(certs.ca)}
    expected = r"^RTT_REDIS_TLS_CA_PATH: .*RTT_REDIS_URL is not a TLS URL: use rediss://"
    with pytest.raises(ConfigError, match=expected):
        load_settings(env=env)


def test_unreadable_tls_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    env = {"RTT_REDIS_URL": "rediss://h:6380/0", "RTT_REDIS_TLS_CA_PATH": str(missing)}
    with pytest.raises(ConfigError, match=r"^RTT_REDIS_TLS_CA_PATH: got .*; cannot read it"):
        load_settings(env=env)


def test_client_certificate_needs_its_key(certs: Certificates) -> None:
    env = {"RTT_REDIS_URL": "rediss://h:6380/0", "RTT_REDIS_TLS_CERT_PATH": str(certs.client_cert)}
    with pytest.raises(ConfigError, match="RTT_REDIS_TLS_KEY_PATH"):
        load_settings(env=env)


@pytest.mark.parametrize("word", ["flase", "nope", "2"])
def test_a_typo_never_turns_certificate_checks_off(word: str) -> None:
    with pytest.raises(ConfigError, match="RTT_REDIS_TLS_VERIFY"):
        load_settings(env={"RTT_REDIS_TLS_VERIFY": word})


@pytest.mark.parametrize(("word", "value"), [("false", False), ("0", False), ("yes", True)])
def test_certificate_checks_turn_off_only_when_asked(word: str, value: bool) -> None:
    assert load_settings(env={"RTT_REDIS_TLS_VERIFY": word}).redis_tls_verify is value


async def test_redis_password_setting_replaces_the_one_in_the_url(
    tls_server: TlsRedis, tls_settings: Callable[..., Settings], prefix: str
) -> None:
    admin = tls_server.client()
    user = f"u{prefix}"
    admin.execute_command("ACL", "SETUSER", user, "on", ">right", "+ping")
    try:
        host = f"127.0.0.1:{tls_server.port}"
        settings = tls_settings(redis_url=f"rediss://{user}:wrong@{host}/0", redis_password="right")
        redis: Redis = create_redis(settings)
        try:
            await check_redis(redis, settings)
            assert await redis.ping()
        finally:
            await redis.aclose()
        wrong = tls_settings(redis_url=f"rediss://{user}:wrong@{host}/0")
        redis = create_redis(wrong)
        try:
            with pytest.raises(RedisRefused, match=rf"refused user '{user}'.*RTT_REDIS_PASSWORD"):
                await check_redis(redis, wrong)
        finally:
            await redis.aclose()
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
