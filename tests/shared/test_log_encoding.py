"""A log line never fails the code that writes it, whatever its values hold."""

from __future__ import annotations

import io

import msgspec

from shared.logs import configure_logging, get_logger


def test_values_msgspec_refuses_are_escaped_not_raised() -> None:
    buffer = io.BytesIO()
    configure_logging(component="test", fmt="json", stream=buffer, cache=False)
    get_logger().warning("odd_values", request_id="bw-\udcff", big=2**70)
    [line] = map(msgspec.json.decode, buffer.getvalue().splitlines())
    assert line["event"] == "odd_values"
    assert line["request_id"] == "bw-\\udcff"
    assert line["big"] == 2**70
