"""The shipped rules and the live /metrics pages, checked by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ops.live import LivePages

pytestmark = [pytest.mark.integrations, pytest.mark.slow]


def _promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test-integrations` installs Debian's prometheus"
    result = subprocess.run(
        [promtool, *args], input=stdin, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_rules_are_valid(deploy_dir: Path) -> None:
    out = _promtool("check", "rules", str(deploy_dir / "prometheus" / "rtt-events.rules.yml"))
    assert "SUCCESS: 10 rules found" in out


def test_rules_fire_and_stay_quiet_as_their_unit_tests_say(deploy_dir: Path) -> None:
    out = _promtool("test", "rules", "rtt-events.rules.test.yml", cwd=deploy_dir / "prometheus")
    assert "SUCCESS" in out


@pytest.mark.parametrize("page", ["receiver", "worker"])
def test_live_metrics_pages_pass_promtool_lint(live_pages: LivePages, page: str) -> None:
    _promtool("check", "metrics", stdin=getattr(live_pages, page))
