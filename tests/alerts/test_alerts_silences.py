"""Silences: added, listed and removed with `rtt silence`, honoured by every worker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import running_workers, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import LogLines, add_events
from worker.alerts.silences import add_silence, list_silences, remove_silence


def rtt(args: list[str]) -> int:
    """`rtt ...` as a user runs it: a child process (an in-process run would configure this
    process's logging for good)."""
    done = subprocess.run(
        [sys.executable, "-m", "rtt", *args], capture_output=True, text=True, timeout=60
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def _json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if "event" not in row:  # skip log lines
                rows.append(row)
    return rows


def test_add_list_and_remove_from_the_command_line(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--redis-url", redis_url, "--key-prefix", prefix, "--log-format", "json"]
    code = rtt(
        [
            "silence",
            "add",
            "--match",
            "cause=connection-error",
            "--match",
            "application_id=7fc9698a-*",
            "--for",
            "2h",
            "--comment",
            "ASR maintenance",
            *where,
        ]
    )
    assert code == 0
    silence_id = capsys.readouterr().out.split()[0]
    assert rtt(["silence", "list", "--json", *where]) == 0
    [row] = _json_lines(capsys.readouterr().out)
    assert row["id"] == silence_id
    assert row["matchers"] == {"cause": "connection-error", "application_id": "7fc9698a-*"}
    assert row["comment"] == "ASR maintenance"
    assert row["muted"] == 0
    assert row["ends_at_ms"] - row["starts_at_ms"] == 2 * 3600 * 1000
    assert rtt(["silence", "list", *where]) == 0
    table = capsys.readouterr().out
    assert silence_id in table
    assert "cause=connection-error application_id=7fc9698a-*" in table
    assert rtt(["silence", "remove", silence_id, *where]) == 0
    assert rtt(["silence", "list", *where]) == 0
    assert "no active silences" in capsys.readouterr().out
    assert rtt(["silence", "remove", silence_id, *where]) == 1


def test_an_unknown_field_is_refused_with_the_fields_to_use(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = rtt(
        [
            "silence",
            "add",
            "--match",
            "kause=error",
            "--for",
            "1h",
            "--redis-url",
            redis_url,
            "--key-prefix",
            prefix,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown field 'kause'" in err
    assert "destination_host" in err


async def test_silenced_alerts_are_logged_at_info_counted_and_not_sent(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    logs: LogLines,
) -> None:
    webhook = sink_servers["webhook"]
    settings = make_settings(alert_webhook_url=webhook.url)
    keys = Keys(settings.key_prefix)
    silence = await add_silence(
        redis,
        keys,
        {"cause": "connection-error", "destination_host": "asr.example.com"},
        timedelta(hours=1),
        comment="maintenance",
    )

    def failure(n: int, cause: str, destination: str) -> bytes:
        event = sample_event(
            "stopped", cause=cause, transcription_id=f"t-{n}", destination=destination
        )
        return msgspec.json.encode(event)

    async with running_workers(settings, redis):
        await add_events(redis, settings, failure(1, "connection-error", "wss://asr.example.com/a"))
        await add_events(redis, settings, failure(2, "connection-error", "wss://asr.example.com/b"))
        await add_events(redis, settings, failure(3, "error", "wss://asr.example.com/a"))
        await add_events(redis, settings, failure(4, "connection-error", "wss://other.example/"))
        await wait_handled(redis, settings, 4)
        # The same silenced failure again (a Bandwidth retry): counted once.
        await add_events(redis, settings, failure(1, "connection-error", "wss://asr.example.com/a"))
        await wait_handled(redis, settings, 5)
        # Once the silence is removed, the same kind of failure alerts again.
        assert await remove_silence(redis, keys, silence.id)
        await add_events(redis, settings, failure(5, "connection-error", "wss://asr.example.com/c"))
        await wait_handled(redis, settings, 6)
    muted = logs.named("transcription_alert_silenced")
    assert sorted(line["transcription_id"] for line in muted) == ["t-1", "t-2"]
    assert {line["level"] for line in muted} == {"info"}
    assert {line["silence_id"] for line in muted} == {silence.id}
    alerted = sorted(line["transcription_id"] for line in logs.named("transcription_alert"))
    assert alerted == ["t-3", "t-4", "t-5"]
    sent = sorted(a["transcription_id"] for a in webhook.accepted if a["kind"] == "alert")
    assert sent == ["t-3", "t-4", "t-5"]


async def test_hits_are_counted_per_silence(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    settings = make_settings()
    keys = Keys(settings.key_prefix)
    silence = await add_silence(redis, keys, {"severity": "warning"}, timedelta(minutes=5))
    async with running_workers(settings, redis):
        for n in range(3):
            body = sample_event("rejected", cause="track-limit", transcription_id=f"t-{n}")
            await add_events(redis, settings, msgspec.json.encode(body))
        await wait_handled(redis, settings, 3)
    [(listed, hits)] = await list_silences(redis, keys)
    assert (listed.id, hits) == (silence.id, 3)
    assert logs.named("transcription_alert") == []
