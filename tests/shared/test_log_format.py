"""Each line keeps the format structlog's own processors give it: the cheaper stamp and the
renderers run only when asked change no byte of what an operator reads."""

from __future__ import annotations

import datetime
import io
import re
import time

import msgspec
import pytest

from shared.logs import _UtcIsoStamp, configure_logging, get_logger, mask_phone


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
