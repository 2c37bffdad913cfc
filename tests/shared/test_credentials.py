"""Secret settings from files (`RTT_<NAME>_FILE`), and secrets never shown."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.credentials import read_secret_files
from shared.embedded import free_port
from shared.redis_urls import mask_url
from shared.settings import SECRET_SETTINGS, SECRET_VARIABLES, ConfigError, load_settings
from tests.helpers import wait_for
from tests.processes import Program, http_status
from tests.worker.helpers import REPO

_VALUES = {
    "basic_auth": ("bw:s3cret-pass", ["bw:s3cret-pass"]),
    "redis_url": ("rediss://u:s3cret@redis.example.com:6380/0",) * 2,
    "redis_password": ("s3cret",) * 2,
    "redis_sentinel_password": ("s3cret-sentinel",) * 2,
    "alert_webhook_url": ("https://hooks.example.com/T0K3N",) * 2,
    "alert_slack_webhook_url": ("https://hooks.slack.com/services/T/B/S3CR3T",) * 2,
    "alert_pagerduty_routing_key": ("R0UTINGKEY0123456789012345678901",) * 2,
    "alert_alertmanager_url": ("https://am:s3cret@am.example.com",) * 2,
}


def test_every_secret_setting_has_a_file_form() -> None:
    assert set(SECRET_SETTINGS) >= {
        "basic_auth",
        "redis_url",
        "redis_password",
        "alert_webhook_url",
        "alert_slack_webhook_url",
        "alert_pagerduty_routing_key",
    }
    assert set(SECRET_SETTINGS) <= set(_VALUES)


def test_readme_lists_every_secret_setting_and_its_file_form() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Secrets from files", 1)[1].split("\n#", 1)[0]
    rows = set(re.findall(r"^\| `(RTT_\w+)` \| `(RTT_\w+)` \|$", table, re.M))
    assert rows == {(variable, variable + "_FILE") for variable in SECRET_VARIABLES}


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_secret_setting_read_from_its_file(name: str, tmp_path: Path) -> None:
    text, expected = _VALUES[name]
    secret = tmp_path / name
    secret.write_text(text + "\n")
    settings = load_settings(env={f"RTT_{name.upper()}_FILE": str(secret)})
    assert getattr(settings, name) == expected


def test_only_one_trailing_newline_is_dropped(tmp_path: Path) -> None:
    for content, expected in [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"), ("pw \n\n", "pw \n")]:
        (tmp_path / "s").write_text(content, newline="")
        assert read_secret_files({"X_FILE": str(tmp_path / "s")}, ["X"]) == {"X": expected}


def test_variable_and_its_file_both_set_is_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("bw:other")
    env = {"RTT_BASIC_AUTH": "bw:pw", "RTT_BASIC_AUTH_FILE": str(tmp_path / "s")}
    with pytest.raises(ConfigError) as error:
        load_settings(env=env)
    assert "RTT_BASIC_AUTH and RTT_BASIC_AUTH_FILE are both set" in str(error.value)
    assert "pw" not in str(error.value).replace("PASSWORD", "")


def test_unreadable_secret_file_names_its_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=rf"^RTT_REDIS_PASSWORD_FILE: cannot read {missing}"):
        load_settings(env={"RTT_REDIS_PASSWORD_FILE": str(missing)})


def test_bad_secret_from_a_file_is_named_by_its_file_variable(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("no-colon-s3cret\n")
    with pytest.raises(ConfigError) as error:
        load_settings(env={"RTT_BASIC_AUTH_FILE": str(tmp_path / "s")})
    assert str(error.value).startswith("RTT_BASIC_AUTH_FILE: ")
    assert "s3cret" not in str(error.value)


def test_file_variables_are_known_settings() -> None:
    assert all(variable.startswith("RTT_") for variable in SECRET_VARIABLES)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss://user:s3cret@h:6380/0", "rediss://user:***@h:6380/0"),
        ("redis://:s3cret@h:6379", "redis://:***@h:6379"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
        ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1"),
        (
            "redis+sentinel://:s3cret@a:26379,b:26379/mymaster",
            "redis+sentinel://:***@a:26379,b:26379/mymaster",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://u:s3cret@h:notaport/0", "redis://u:***@h:notaport/0"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "s3cret" not in mask_url(url)


def test_help_shows_no_secret_from_the_environment() -> None:
    env = {
        "RTT_BASIC_AUTH": "bw:s3cret-help",
        "RTT_REDIS_URL": "redis://:s3cret-help@h:1/0",
        "PATH": "/usr/bin:/bin",
    }
    for command in ("receiver", "worker", "serve", "stats"):
        done = subprocess.run(
            [sys.executable, "-m", "rtt", command, "--help"],
            env=env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert b"s3cret-help" not in done.stdout + done.stderr
        assert b"--redis-tls-ca-path" in done.stdout


@pytest.mark.slow
def test_serve_on_an_external_redis_from_a_file_masks_its_password(
    redis_url: str, tmp_path: Path
) -> None:
    """The banner shows the URL masked; the URL file reaches the children as it is."""
    # The embedded Valkey's default user takes any password.
    url = redis_url.replace("redis://", "redis://default:s3cret-serve@", 1)
    (tmp_path / "url").write_text(url + "\n")
    port = free_port()
    env = {
        "RTT_REDIS_URL_FILE": str(tmp_path / "url"),
        "RTT_PORT": str(port),
        "RTT_HOST": "127.0.0.1",
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
        "RTT_DATA_DIR": str(tmp_path / "data"),
    }
    serve = Program(["rtt", "serve"], env, tmp_path / "serve.log")
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 30, "ready")
        wait_for(lambda: "rtt-events is running." in serve.text(), 60, "banner")
    finally:
        code = serve.stop(signal.SIGINT)
    assert code == 0, serve.text()
    assert "default:***@127.0.0.1" in serve.text()
    assert "s3cret-serve" not in serve.text()
