"""Against a real Alertmanager (Debian's): the alert in its API with its labels, a grouped
notification at a webhook receiver its route names, and a rate incident resolved."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.embedded import free_port
from shared.settings import Settings
from tests.alerts.helpers import running_workers, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_body
from tests.helpers import add_events, eventually, wait_for

pytestmark = [pytest.mark.integrations, pytest.mark.slow]

_CONFIG = """
route:
  receiver: oncall
  group_by: [alertname, cause]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: oncall
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@pytest.fixture
async def notified() -> AsyncIterator[SinkServer]:
    """The webhook receiver Alertmanager's route notifies."""
    server = SinkServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, notified: SinkServer) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "make test-integrations installs Debian's prometheus-alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text(_CONFIG.format(url=notified.url))
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(url + "/-/ready") is not None, 30, "alertmanager ready")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = response.read()
    except OSError:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


async def test_alerts_reach_alertmanager_its_route_and_a_rate_incident_resolves(
    alertmanager: str, notified: SinkServer, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(
        alert_alertmanager_url=alertmanager,
        alert_rate_window="3s",
        alert_rate_min_stops=3,
        alert_rate_threshold=0.5,
        alert_alertmanager_resend="500ms",
    )
    async with running_workers(settings, redis):
        for n in range(4):
            body = sample_body(
                "stopped", cause="error", call_id=f"c-am-{n}", transcription_id=f"t-am-{n}"
            )
            await add_events(redis, settings, body)
        await wait_handled(redis, settings, 4)

        def in_api() -> list[dict[str, Any]]:
            found = _get(alertmanager + "/api/v2/alerts") or []
            return [a for a in found if a["labels"]["alertname"] == "TranscriptionFailed"]

        alerts = await eventually(
            lambda: len(in_api()) == 4 and in_api(), 30, "4 alerts in the API"
        )
        for alert in alerts:
            assert alert["labels"]["cause"] == "error"
            assert alert["labels"]["severity"] == "error"
            assert alert["labels"]["event_type"] == "realTimeTranscriptionStopped"
            assert alert["labels"]["destination_host"] == "transcripts.example.com"
            assert alert["status"]["state"] == "active"
            # One-shot alerts resolve by themselves (RTT_ALERT_ALERTMANAGER_RESOLVE_AFTER).
            assert alert["endsAt"] > alert["startsAt"]

        def grouped() -> list[dict[str, Any]]:
            return [
                n
                for n in notified.accepted
                if n["groupLabels"].get("alertname") == "TranscriptionFailed"
                and len(n["alerts"]) == 4
            ]

        [notification, *_] = await eventually(grouped, 30, "one notification for the 4 alerts")
        print("\nAlertmanager notified:", json.dumps(notification, indent=1)[:1500])
        assert notification["status"] == "firing"
        assert notification["groupLabels"] == {"alertname": "TranscriptionFailed", "cause": "error"}

        def rate(status: str) -> list[dict[str, Any]]:
            return [
                n
                for n in notified.accepted
                if n["groupLabels"].get("alertname") == "TranscriptionFailureRate"
                and n["status"] == status
            ]

        # 4 of 4 stops failed: the rate incident fires; with no stop for 3 s it resolves.
        await eventually(lambda: rate("firing"), 30, "the rate incident firing")
        [resolved, *_] = await eventually(
            lambda: rate("resolved"), 30, "the rate incident resolved"
        )
        assert resolved["alerts"][0]["labels"]["incident"] == "1"
        assert resolved["alerts"][0]["endsAt"] > resolved["alerts"][0]["startsAt"]
