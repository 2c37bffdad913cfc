"""Settings: environment and flags into one typed object; bad values name the variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.settings import ConfigError, load_settings


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.port == 8080
    assert settings.path == "/realTimeTranscriptionEvents"
    assert settings.max_body_size == 64 * 1024
    assert settings.alert_causes == ["connection-error", "error"]


def test_environment_then_flags() -> None:
    env = {"RTT_PORT": "9000", "RTT_BASIC_AUTH": "a:1, b:2", "RTT_STORE_TIMEOUT": "500ms",
           "RTT_LOG_PHONE_NUMBERS": "1", "RTT_STREAM_RETENTION": "P2D", "OTHER": "x"}  # fmt: skip
    settings = load_settings(env=env, overrides={"port": "9001"})
    assert settings.port == 9001
    assert settings.basic_auth_pairs == [("a", "1"), ("b", "2")]
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
