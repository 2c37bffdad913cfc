"""Checks of the Dockerfile and docker-compose.yml that need no Docker engine: every
setting they name exists, every command they run is one `rtt` knows, every package the
project ships is copied into the image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from rtt.cli import COMMANDS
from shared.settings import ENV_PREFIX, load_settings

ROOT = Path(__file__).parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
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
        env = {
            key: re.sub(r"\$\{[^}:]+:-([^}]*)\}", r"\1", str(value))
            for key, value in svc["environment"].items()
        }
        assert all(key.startswith(ENV_PREFIX) for key in env), name
        unknown = [key for key in env if key[len(ENV_PREFIX) :].lower() not in _setting_names()]
        assert unknown == [], f"{name}: not settings: {unknown}"
        load_settings(env=env)  # raises ConfigError naming the variable if a value is wrong


def test_receiver_spool_is_on_a_volume() -> None:
    receiver = COMPOSE["services"]["receiver"]
    spool_dir = receiver["environment"]["RTT_SPOOL_DIR"]
    mounts = [volume.split(":")[1] for volume in receiver["volumes"]]
    assert spool_dir in mounts


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
    python = re.findall(r"^FROM python:(\d+\.\d+)", DOCKERFILE, re.M)
    required = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert python
    assert all(
        tuple(map(int, v.split("."))) >= tuple(map(int, required.split("."))) for v in python
    )


def _setting_names() -> set[str]:
    import msgspec

    from shared.settings import Settings

    return {field.name for field in msgspec.structs.fields(Settings)}
