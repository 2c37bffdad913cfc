from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.live import LivePages, run_live_pages


@pytest.fixture(scope="module")
def live_pages(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePages]:
    yield from run_live_pages(
        redis_url, f"t{uuid.uuid4().hex[:10]}", tmp_path_factory.mktemp("live")
    )


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "deploy"
