"""Reply values as text, and stream ids in the order the stream keeps them."""

from __future__ import annotations

from shared.redis_values import as_text, id_ms, parse_stream_id


def test_text_from_every_shape_a_reply_comes_in() -> None:
    assert [as_text(v) for v in (b"g1", bytearray(b"g1"), memoryview(b"g1"), "g1")] == ["g1"] * 4
    assert as_text(7) == "7"
    assert as_text(b"\xff", errors="replace") == "\ufffd"


def test_stream_ids_sort_by_time_then_sequence_not_as_text() -> None:
    ids = [b"10-0", "9-100", b"10-2", "9"]
    assert sorted(ids, key=parse_stream_id) == ["9", "9-100", b"10-0", b"10-2"]
    assert id_ms(b"1700000000000-3") == 1_700_000_000_000
