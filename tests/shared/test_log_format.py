"""Each line keeps the format structlog's own processors give it: the cheaper stamp and the
renderers run only when asked change no byte of what an operator reads."""

from __future__ import annotations

import asyncio
import datetime
import io
import re
import time

import msgspec
import pytest

from shared.logs import _UtcIsoStamp, configure_logging, get_logger, held_lines, mask_phone
from tests.helpers import SeparateWrites


def test_stamp_is_utc_iso_8601_with_a_z_as_timestamper_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamp = _UtcIsoStamp()
    for ns in (1_764_670_962_104_051_999, 1_764_670_962_000_000_123, 1_764_670_963_000_001_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.UTC)
        want = expected.isoformat().replace("+00:00", "Z")
        assert stamp(None, "info", {})["timestamp"] == want


def test_a_line_has_its_stamp_and_its_exception_rendered_only_when_given() -> None:
    buffer = io.BytesIO()
    configure_logging(component="test", fmt="json", stream=buffer, cache=False)
    log = get_logger()
    log.info("plain", to="+15551112222")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    log.info("with_stack", stack_info=True)
    plain, failed, with_stack = map(msgspec.json.decode, buffer.getvalue().splitlines())
    assert list(plain) == ["to", "event", "component", "level", "timestamp"]
    assert plain["to"] == mask_phone("+15551112222") != "+15551112222"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", plain["timestamp"])
    assert "ValueError: boom" in failed["exception"]
    assert "exc_info" not in failed
    assert "Stack (most recent call last)" in with_stack["stack"]
    assert "stack_info" not in with_stack


def test_held_lines_are_written_at_once_at_the_blocks_end_even_when_it_raises() -> None:
    out = SeparateWrites()
    configure_logging(component="test", fmt="json", stream=out, cache=False)
    log = get_logger()
    try:
        with held_lines():
            log.info("one")
            log.warning("two")
            assert out.writes == []
            raise RuntimeError
    except RuntimeError:
        pass
    log.info("three")
    assert [
        [msgspec.json.decode(line)["event"] for line in w.splitlines()] for w in out.writes
    ] == [
        ["one", "two"],
        ["three"],
    ]
    assert out.getvalue().count(b"\n") == 3


async def test_a_task_started_while_lines_are_held_writes_its_later_lines_itself() -> None:
    out = SeparateWrites()
    configure_logging(component="test", fmt="json", stream=out, cache=False)
    log = get_logger()
    block_ended = asyncio.Event()

    async def other() -> None:
        log.info("during")
        await block_ended.wait()
        log.info("after")

    with held_lines():
        log.info("held")
        task = asyncio.create_task(other())
        await asyncio.sleep(0)
    block_ended.set()
    await task
    events = [[msgspec.json.decode(line)["event"] for line in w.splitlines()] for w in out.writes]
    assert events == [["held", "during"], ["after"]]
