"""`rtt send` against a real receiver: every type and cause, Basic auth, pacing, the report."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from receiver.app import create_app
from rtt.send import SendOptions, main, send_events
from shared.keys import Keys
from shared.settings import Settings


@pytest.fixture
async def receiver_url(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[tuple[str, Settings]]:
    settings = make_settings(basic_auth="demo:s3cret")
    server = TestServer(create_app(settings, redis), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(settings.path)), settings
    finally:
        await server.close()


async def test_every_type_and_cause_is_sent_and_stored(
    receiver_url: tuple[str, Settings], redis: Redis
) -> None:
    url, settings = receiver_url
    options = SendOptions(url=url, type="all", count=18, concurrency=4, user="demo:s3cret")
    report = await send_events(options)
    assert report.sent == 18
    assert report.statuses == {"204": 18}
    assert report.all_accepted
    assert set(report.latency_ms) == {"p50", "p90", "p99", "max"}
    assert report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]
    entries = await redis.xrange(Keys(settings.key_prefix).events())
    kinds = Counter()
    for _, fields in entries:
        body = msgspec.json.decode(fields[b"body"])
        kinds[(body["eventType"], body.get("cause"))] += 1
    # 9 kinds (4 types; Stopped with 3 causes, Rejected with 4), each twice.
    assert kinds == {
        ("realTimeTranscriptionStarted", None): 2,
        ("realTimeTranscriptionAvailable", None): 2,
        **{("realTimeTranscriptionStopped", c): 2 for c in ("closed", "connection-error", "error")},
        **{
            ("realTimeTranscriptionRejected", c): 2
            for c in ("connection-error", "duplicate", "error", "track-limit")
        },
    }


async def test_the_rate_is_a_schedule_not_a_suggestion(receiver_url: tuple[str, Settings]) -> None:
    url, _ = receiver_url
    options = SendOptions(url=url, count=10, rate=50, concurrency=5, user="demo:s3cret")
    report = await send_events(options)
    assert report.statuses == {"204": 10}
    # The 10th request is scheduled 9/50 s after the first: the run cannot be shorter.
    assert report.elapsed_s >= 9 / 50
    assert report.target_rate_per_s == 50


async def test_wrong_credentials_are_reported_and_fail_the_command(
    receiver_url: tuple[str, Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = receiver_url
    argv = ["--url", url, "--count", "3", "--cause", "error", "--user", "demo:wrong", "--json"]
    code = await asyncio.to_thread(main, argv)
    assert code == 1
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith('{"sent"')]
    report = json.loads(line)
    assert report["statuses"] == {"401": 3}
    assert report["sent"] == 3


async def test_a_receiver_that_is_not_there_is_counted_not_crashed_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shared.embedded import free_port

    url = f"http://127.0.0.1:{free_port()}/realTimeTranscriptionEvents"
    code = await asyncio.to_thread(main, ["--url", url, "--count", "2", "--timeout", "2"])
    assert code == 1
    out = capsys.readouterr().out
    assert "sent 2 events" in out
    assert "ClientConnectorError x2" in out


@pytest.fixture
async def custom_receiver(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[tuple[TestServer, Settings]]:
    settings = make_settings(path="/bw/events")
    server = TestServer(create_app(settings, redis), host="127.0.0.1")
    await server.start_server()
    try:
        yield server, settings
    finally:
        await server.close()


async def test_the_default_url_follows_rtt_host_port_and_path(
    custom_receiver: tuple[TestServer, Settings],
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, settings = custom_receiver
    monkeypatch.setenv("RTT_HOST", "0.0.0.0")  # as the receiver was told: listen everywhere
    monkeypatch.setenv("RTT_PORT", str(server.port))
    monkeypatch.setenv("RTT_PATH", "/bw/events")
    assert await asyncio.to_thread(main, ["--json", "--cause", "error"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["statuses"] == {"204": 1}
    assert await redis.xlen(Keys(settings.key_prefix).events()) == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--type", "stoped"], "invalid choice: 'stoped'"),
        (["--cause", "eror"], "invalid choice: 'eror'"),
        (["--type", "started", "--cause", "error"], "--type started events have no cause"),
        (["--type", "stopped", "--cause", "duplicate"], "'duplicate' is not a stopped cause"),
        (["--type", "mixed", "--cause", "closed"], "both Stopped and Rejected"),
        (["--type", "all", "--cause", "error"], "leave out --cause"),
        (["--unknown-cause", "error"], "is a known cause"),
        (["--cause", "error", "--unknown-cause", "x"], "not allowed with argument"),
    ],
)
def test_a_type_or_cause_it_cannot_send_is_refused(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main([*argv, "--url", "http://127.0.0.1:1/x"])
    except SystemExit as exc:  # argparse's own refusals
        code = int(str(exc.code))
    assert code == 2
    assert says in capsys.readouterr().err


async def test_an_unknown_cause_is_sent_when_asked_for_by_name(
    receiver_url: tuple[str, Settings], redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    url, settings = receiver_url
    argv = ["--url", url, "--user", "demo:s3cret", "--unknown-cause", "brand-new", "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    [(_, fields)] = await redis.xrange(Keys(settings.key_prefix).events())
    assert msgspec.json.decode(fields[b"body"])["cause"] == "brand-new"
