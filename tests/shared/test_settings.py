"""Settings: environment and flags into one typed object; bad values name the variable."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from shared.settings import (
    ALL_SETTINGS,
    WORKER_SETTINGS,
    ConfigError,
    Settings,
    add_arguments,
    format_duration,
    load_settings,
    parse_duration,
)


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.port == 8080
    assert settings.path == "/realTimeTranscriptionEvents"
    assert settings.max_body_size == 64 * 1024
    assert settings.alert_causes == ["connection-error", "error"]


def test_environment_then_flags() -> None:
    env = {
        "RTT_PORT": "9000",
        "RTT_BASIC_AUTH": "a:1, b:2",
        "RTT_STORE_TIMEOUT": "500ms",
        "RTT_LOG_PHONE_NUMBERS": "1",
        "RTT_STREAM_RETENTION": "P2D",
        "OTHER": "x",
    }
    settings = load_settings(env=env, overrides={"port": "9001"})
    assert settings.port == 9001
    assert settings.basic_auth == ["a:1", "b:2"]
    assert settings.store_timeout == timedelta(milliseconds=500)
    assert settings.stream_retention == timedelta(days=2)
    assert settings.log_phone_numbers is True


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RTT_PORT": "eighty"}, ["RTT_PORT", "int"]),
        ({"RTT_PORT": "70000"}, ["RTT_PORT", "<= 65535"]),
        ({"RTT_LOG_FORMAT": "xml"}, ["RTT_LOG_FORMAT", "json"]),
        ({"RTT_STORE_TIMEOUT": "soon"}, ["RTT_STORE_TIMEOUT", "duration"]),
        ({"RTT_BASIC_AUTH": "nopassword"}, ["RTT_BASIC_AUTH", "user:password"]),
        ({"RTT_SHARDS": "0"}, ["RTT_SHARDS", ">= 1"]),
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    for name in names:
        assert name in str(caught.value)


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--port"):
        load_settings(env={"RTT_PORT": "1"}, overrides={"port": "x"})


@pytest.mark.parametrize(
    ("variable", "value", "floor"),
    [
        # One posted event became 15 stream entries: SET PX 0 fails after the XADD.
        ("RTT_DEDUP_WINDOW", "0s", "100ms"),
        # 6,237 worker_stats lines in 3 s.
        ("RTT_STATS_INTERVAL", "0s", "100ms"),
        # XREADGROUP BLOCK 0 waits forever.
        ("RTT_BLOCK", "0", "10ms"),
        ("RTT_HEARTBEAT_TTL", "-1s", "100ms"),
        ("RTT_STORE_TIMEOUT", "PT0S", "10ms"),
        ("RTT_SHUTDOWN_TIMEOUT", "-5s", "0s"),
    ],
)
def test_a_duration_below_its_floor_is_refused(variable: str, value: str, floor: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: got {value!r}; ")
    assert f"at least {floor}" in message
    for form in ("500ms", "2s", "5m", "24h", "7d", "ISO 8601"):
        assert form in message


def test_a_duration_error_names_the_accepted_forms() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"RTT_DEDUP_WINDOW": "one day"})
    message = str(caught.value)
    assert "Invalid ISO8601" not in message
    assert message == (
        "RTT_DEDUP_WINDOW: got 'one day'; expected a duration: "
        "500ms, 2s, 5m, 24h, 7d or ISO 8601 such as PT2S"
    )


def test_a_heartbeat_must_be_renewed_before_it_expires() -> None:
    with pytest.raises(ConfigError, match=r"RTT_HEARTBEAT_TTL: got '1s'; expected longer than"):
        load_settings(env={"RTT_HEARTBEAT_TTL": "1s"})  # interval is 2s
    with pytest.raises(ConfigError, match=r"RTT_RETRY_BASE: got '10m'; expected at most"):
        load_settings(env={"RTT_RETRY_BASE": "10m"})  # maximum is 5m


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nonsense", "redis://host:6379/0"),
        ("http://localhost:6379", "schemes"),
        ("redis://", "no host"),
        ("redis://localhost:99999/0", "port '99999'"),
        ("redis://localhost:port/0", "port 'port'"),
        ("redis://localhost:6379/zero", "database 'zero'"),
        ("redis+sentinel://a:26379,b:x/mymaster", "port 'x'"),
        ("unix://", "socket path"),
    ],
)
def test_a_bad_redis_url_is_a_setting_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"RTT_REDIS_URL": url})
    message = str(caught.value)
    assert message.startswith(f"RTT_REDIS_URL: got {url!r}; ")
    assert says in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://user:pw@redis.example.com:6380/2",
        "redis://[::1]:6379",
        "unix:///run/redis.sock",
        "redis+sentinel://s1:26379,s2:26379/mymaster/1",
        "redis+cluster://node1:7000",
    ],
)
def test_good_redis_urls_pass(url: str) -> None:
    assert load_settings(env={"RTT_REDIS_URL": url}).redis_url == url


def test_a_redis_password_never_appears_in_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"RTT_REDIS_URL": "redis://app:hunter2@db:0/0"})
    assert "hunter2" not in str(caught.value)
    assert "redis://app:***@db:0/0" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"RTT_BASIC_AUTH": "hunter2"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("variable", ["RTT_ALLOW_CIDRS", "RTT_TRUSTED_PROXIES"])
def test_a_bad_network_is_a_setting_error(variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={variable: "10.0.0.0/8, 10.0.0.0/33"})
    assert str(caught.value).startswith(f"{variable}: got '10.0.0.0/8, 10.0.0.0/33'; ")
    assert "'10.0.0.0/33'" in str(caught.value)


def test_a_setting_a_command_does_not_read_does_not_stop_it() -> None:
    env = {"RTT_PORT": "eighty", "RTT_STATS_INTERVAL": "0s", "RTT_KEY_PREFIX": "p"}
    settings = load_settings(env=env, names=["redis_url", "key_prefix"])
    assert settings.key_prefix == "p"
    assert settings.port == 8080
    with pytest.raises(ConfigError, match="RTT_PORT"):
        load_settings(env=env, names=["port"])


def test_help_shows_defaults_as_a_user_types_them() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, ALL_SETTINGS)
    text = " ".join(parser.format_help().split())
    assert "day," not in text
    assert "0:00" not in text
    assert "[RTT_DEDUP_WINDOW; default 24h; at least 100ms]" in text
    assert "[RTT_STREAM_RETENTION; default 7d; at least 0s]" in text
    assert "[RTT_STORE_TIMEOUT; default 2s; at least 10ms]" in text
    assert "[RTT_LOG_PHONE_NUMBERS; default 0]" in text
    # Every default shown parses back to itself.
    for name in ALL_SETTINGS:
        field = Settings.__struct_fields__.index(name)
        default = Settings.__struct_defaults__[field]
        if isinstance(default, timedelta):
            assert parse_duration(format_duration(default)) == default.total_seconds()


def test_a_bad_boolean_is_refused() -> None:
    with pytest.raises(ConfigError, match="RTT_LOG_PHONE_NUMBERS: got 'maybe'; expected 1 or 0"):
        load_settings(env={"RTT_LOG_PHONE_NUMBERS": "maybe"})
    assert load_settings(env={"RTT_LOG_PHONE_NUMBERS": "off"}).log_phone_numbers is False


def test_worker_metrics_follow_rtt_host_unless_given_their_own() -> None:
    assert load_settings(env={"RTT_HOST": "10.0.0.5"}).worker_metrics_listen_host == "10.0.0.5"
    env = {"RTT_HOST": "10.0.0.5", "RTT_WORKER_METRICS_HOST": "127.0.0.1"}
    assert load_settings(env=env).worker_metrics_listen_host == "127.0.0.1"


def test_the_worker_reads_rtt_host_for_its_metrics() -> None:
    """`rtt serve` hands its loopback RTT_HOST to the worker: /metrics must follow it."""
    settings = load_settings(env={"RTT_HOST": "127.0.0.1"}, names=WORKER_SETTINGS)
    assert settings.worker_metrics_listen_host == "127.0.0.1"
