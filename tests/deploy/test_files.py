"""Checks of the Dockerfile and docker-compose.yml that need no Docker engine: every
setting they name exists, every command they run is one `rtt` knows, every package the
project ships is copied into the image, and the deployment's own rules hold (each role's
health check, one spool per receiver, restart policies, stop grace periods, secrets
from files only).

`make test-deploy` (test_compose.py beside this file) runs the same files in real containers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from rtt.cli import COMMANDS
from shared.credentials import FILE_SUFFIX
from shared.settings import ENV_PREFIX, SECRET_SETTINGS, SECRET_VARIABLES, load_settings

ROOT = Path(__file__).parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SECRETS_MOUNT = "/run/secrets/"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _rtt_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in COMPOSE["services"].items() if svc.get("build")}


def test_compose_runs_receiver_and_worker_against_its_redis() -> None:
    services = _rtt_services()
    commands = {svc["command"][0] for svc in services.values()}
    assert {"receiver", "worker"} <= commands
    for svc in services.values():
        assert svc["command"][0] in COMMANDS
        assert svc["environment"]["RTT_REDIS_URL"].startswith("redis://redis:")
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    redis_command = " ".join(COMPOSE["services"]["redis"]["command"])
    assert "--appendonly yes" in redis_command  # a 204 is only as durable as Redis


def test_compose_environment_names_real_settings_with_valid_values() -> None:
    for name, svc in _rtt_services().items():
        env = _env(svc)
        assert all(key.startswith(ENV_PREFIX) for key in env), name
        unknown = [
            key
            for key in env
            if key[len(ENV_PREFIX) :].lower() not in _setting_names()
            and key.removesuffix(FILE_SUFFIX) not in SECRET_VARIABLES
        ]
        assert unknown == [], f"{name}: not settings: {unknown}"
        load_settings(env=_plain_env(svc))  # raises ConfigError naming a wrong value


def test_no_secret_reaches_a_container_as_a_plain_environment_value() -> None:
    """A secret in `environment:` shows in `docker inspect` and every process listing of
    the container: each comes from a file under /run/secrets (RTT_<NAME>_FILE)."""
    for name, svc in _rtt_services().items():
        plain = [key for key in _env(svc) if key in SECRET_VARIABLES]
        # The compose network's own Redis has no password: its URL is no secret.
        assert plain in ([], ["RTT_REDIS_URL"]), name
        assert urlsplit(_env(svc).get("RTT_REDIS_URL", "")).password is None, name
    # Nor through interpolation from the shell of `docker compose up`.
    for variable in SECRET_VARIABLES:
        assert "${" + variable not in COMPOSE_TEXT, variable


def test_each_secret_file_setting_points_at_a_secret_the_service_mounts() -> None:
    for name, svc in _rtt_services().items():
        mounted = set(svc.get("secrets", []))
        for key, path in _env(svc).items():
            if not key.endswith(FILE_SUFFIX):
                continue
            secret = path.removeprefix(SECRETS_MOUNT)
            assert path == SECRETS_MOUNT + secret, (name, key)
            assert secret in mounted, (name, key)
            assert "file" in COMPOSE["secrets"][secret], secret
    for receiver in _receivers().values():  # a receiver never runs open by accident
        assert receiver["environment"]["RTT_BASIC_AUTH_FILE"] == SECRETS_MOUNT + "basic_auth"


def test_the_compose_file_shows_every_secret_settings_file_form() -> None:
    """The optional ones as comments, ready to uncomment: the setting, and its secret."""
    for setting in SECRET_SETTINGS:
        variable = ENV_PREFIX + setting.upper() + FILE_SUFFIX
        assert f"{variable}: {SECRETS_MOUNT}{setting}" in COMPOSE_TEXT, variable
        assert re.search(
            rf"^ *(# )?  file: \$\{{RTT_SECRETS_DIR:-\./secrets\}}/{setting}$", COMPOSE_TEXT, re.M
        ), setting


def test_secret_files_stay_out_of_git_and_of_the_build_context() -> None:
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines()


def _role(svc: dict[str, Any]) -> str:
    return str(svc["command"][0])


def _receivers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _rtt_services().items() if _role(svc) == "receiver"}


def _env(svc: dict[str, Any]) -> dict[str, str]:
    """The service's environment with each `${VAR:-default}` at its default."""
    return {
        key: re.sub(r"\$\{[^}:]+:-([^}]*)\}", r"\1", str(value))
        for key, value in svc["environment"].items()
    }


def _plain_env(svc: dict[str, Any]) -> dict[str, str]:
    """`_env` without the secret files, which exist in the container only."""
    return {key: value for key, value in _env(svc).items() if not key.endswith(FILE_SUFFIX)}


def test_receiver_spool_is_on_a_volume() -> None:
    for name, receiver in _receivers().items():
        spool_dir = receiver["environment"]["RTT_SPOOL_DIR"]
        mounts = [volume.split(":")[1] for volume in receiver["volumes"]]
        assert spool_dir in mounts, name


def test_receivers_run_side_by_side_without_sharing_a_port_or_a_spool() -> None:
    """Two replicas of one service would bind one host port and share one spool volume,
    fighting over its `p0` lock: each receiver is its own service with its own of both."""
    receivers = _receivers()
    assert len(receivers) >= 2
    volumes = [v.split(":")[0] for svc in receivers.values() for v in svc["volumes"]]
    assert len(volumes) == len(set(volumes)), volumes
    assert all(volume in COMPOSE["volumes"] for volume in volumes)  # named: outlives containers
    published = [
        re.sub(r"\$\{[^}:]+:-([^}]*)\}", r"\1", port).rsplit(":", 1)[0]
        for svc in receivers.values()
        for port in svc["ports"]
    ]
    assert len(published) == len(set(published)), published
    # Loopback unless asked: the proxy in front is what faces the network.
    assert all(address.startswith("127.0.0.1:") for address in published), published
    header = (ROOT / "docker-compose.yml").read_text().split("\nservices:")[0]
    assert "--scale receiver" not in header


def test_each_role_has_a_health_check_that_fits_it() -> None:
    """A check of 127.0.0.1:8080/healthz fails every worker and any receiver elsewhere."""
    for name, svc in _rtt_services().items():
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "rtt", "health"], name
        assert test[3] == _role(svc), name
    healthcheck = re.search(r"^HEALTHCHECK .*CMD (.*)$", DOCKERFILE, re.M)
    assert healthcheck is not None
    assert healthcheck[1] == '["rtt", "health"]'  # the role of the container's main process
    assert "8080" not in healthcheck[0]
    assert "health" in COMMANDS


def test_image_creates_the_spool_directory_owned_by_its_user() -> None:
    """A named volume starts as a copy of the image's directory: if the image lacks it,
    the volume is root's and the receiver (uid 10001) runs without a spool."""
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)[-1]
    spool_dir = re.search(r"RTT_SPOOL_DIR=(\S+)", DOCKERFILE)
    assert spool_dir is not None
    assert re.search(rf"mkdir -p {re.escape(spool_dir[1])}\b", DOCKERFILE)
    assert re.search(rf"chown {user}:{user} {re.escape(spool_dir[1])}\b", DOCKERFILE)
    for name, receiver in _receivers().items():
        assert receiver["environment"]["RTT_SPOOL_DIR"] == spool_dir[1], name


def test_every_service_comes_back_after_a_crash() -> None:
    for name, svc in COMPOSE["services"].items():
        assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    assert text, text
    assert match is not None, text
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def test_stop_grace_covers_each_roles_own_shutdown_with_margin() -> None:
    """Past the grace period Docker sends SIGKILL: a receiver must have time for in-flight
    requests (store deadline + read timeout + 5 s), a last store write and its spool drain
    (RTT_SHUTDOWN_TIMEOUT); a worker for its in-flight handlers."""
    margin_s = 5.0
    for name, svc in _rtt_services().items():
        settings = load_settings(env=_plain_env(svc))
        grace_s = _seconds(svc["stop_grace_period"])
        store_s = settings.store_timeout.total_seconds()
        if _role(svc) == "receiver":
            in_flight_s = store_s + settings.read_timeout.total_seconds() + 5
            needed_s = in_flight_s + store_s + settings.shutdown_timeout.total_seconds()
        else:
            needed_s = settings.shutdown_timeout.total_seconds() + 2  # + heartbeat clear
        assert grace_s >= needed_s + margin_s, (name, grace_s, needed_s)


def test_readme_shows_the_operator_commands_of_a_compose_deployment() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("rtt stats", "rtt dlq list", "rtt silence"):
        assert f"docker compose exec worker {command}" in readme, command
    assert "docker compose up -d --build --scale worker=3" in readme
    assert "make test-deploy" in readme


def test_image_ships_every_package_and_the_rtt_command() -> None:
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in DOCKERFILE
        assert (ROOT / package / "__init__.py").is_file()
    assert PYPROJECT["project"]["scripts"]["rtt"] == "rtt.cli:main"
    assert 'ENTRYPOINT ["rtt"]' in DOCKERFILE
    default_command = re.search(r'^CMD \["(\w+)"', DOCKERFILE, re.M)
    assert default_command is not None
    assert default_command[1] in COMMANDS
    # The base image is a build argument; its default is the public image users get.
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["${PYTHON_IMAGE}"] * 2
    python = re.findall(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", DOCKERFILE, re.M)
    required = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert python
    assert all(
        tuple(map(int, v.split("."))) >= tuple(map(int, required.split("."))) for v in python
    )


def _setting_names() -> set[str]:
    import msgspec

    from shared.settings import Settings

    return {field.name for field in msgspec.structs.fields(Settings)}


def test_images_are_variables_defaulting_to_the_public_ones() -> None:
    """Where Docker Hub is out of reach, a mirror or a local stand-in is one variable away."""
    assert COMPOSE["services"]["redis"]["image"] == "${RTT_VALKEY_IMAGE:-valkey/valkey:8}"
    for name, svc in _rtt_services().items():
        assert svc["image"] == "${RTT_IMAGE:-rtt-events:latest}", name
        assert svc["build"]["args"]["PYTHON_IMAGE"] == "${RTT_PYTHON_IMAGE:-python:3.11-slim}"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", DOCKERFILE, re.M)


def test_build_context_leaves_out_what_the_image_does_not_copy() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".rtt", ".git", "tests"} <= ignored
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M)
    for sources in copied:
        for source in sources.split():
            assert source not in ignored, source
            assert (ROOT / source).exists(), source
