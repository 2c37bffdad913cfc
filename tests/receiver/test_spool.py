"""The spool on a real file system: durable, ordered, and tolerant of a crash's torn tail."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from receiver.spool import Spool, SpoolError
from tests.helpers import LogLines


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


async def _drain_all(spool: Spool) -> list[bytes]:
    payloads = []
    while (found := await spool.oldest_segment()) is not None:
        segment, records = found
        payloads += [record.payload for record in records]
        spool.mark_drained(segment, len(records), None)
        await spool.remove(segment)
    return payloads


async def test_concurrent_appends_survive_a_reopen_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert await spool.open()
    payloads = [b"event-%03d" % n for n in range(200)]
    # Appends issued in this order share group commits; the file keeps the order.
    await asyncio.gather(*(spool.append(p, 1_700_000_000_000 + n) for n, p in enumerate(payloads)))
    assert spool.depth == 200
    assert spool.oldest_ms == 1_700_000_000_000
    await spool.close()

    again = Spool(tmp_path)
    assert await again.open()
    assert again.left_over
    await again.scan()
    assert again.depth == 200
    assert await _drain_all(again) == payloads
    assert again.depth == 0
    assert again.oldest_ms is None
    assert not _segments(tmp_path)
    await again.close()


async def test_torn_tail_is_skipped_and_the_next_segment_still_drains(
    tmp_path: Path, logs: LogLines
) -> None:
    first = Spool(tmp_path)
    await first.open()
    await first.append(b"kept-1", 1)
    await first.append(b"kept-2", 2)
    await first.close()
    [segment] = _segments(tmp_path)
    # A crash in the middle of a write: a header that promises more than is there.
    with segment.open("ab") as file:
        file.write(b"\xff\x00\x00\x00\x01\x02\x03\x04\x05")
    second = Spool(tmp_path)
    await second.open()
    await second.append(b"after-restart", 3)
    await second.close()

    third = Spool(tmp_path)
    await third.open()
    await third.scan()
    assert third.depth == 3
    assert await _drain_all(third) == [b"kept-1", b"kept-2", b"after-restart"]
    [torn] = logs.named("spool_record_torn")
    assert torn["kept"] == 2
    await third.close()


async def test_corrupted_record_ends_its_segment_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_max_bytes=1)  # one record per segment
    await spool.open()
    for payload in (b"one", b"two", b"three"):
        await spool.append(payload, 1)
    await spool.close()
    middle = _segments(tmp_path)[1]
    data = bytearray(middle.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit: the checksum no longer matches
    middle.write_bytes(bytes(data))
    again = Spool(tmp_path)
    await again.open()
    assert await _drain_all(again) == [b"one", b"three"]
    await again.close()


async def test_a_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    owner = Spool(tmp_path)
    assert await owner.open()
    intruder = Spool(tmp_path)
    assert not await intruder.open()
    assert "another process" in str(intruder.error)
    with pytest.raises(SpoolError):
        await intruder.append(b"x", 1)
    await owner.close()
    assert await intruder.open()
    await intruder.close()


async def test_unusable_directory_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    spool = Spool(blocker / "spool")
    assert not await spool.open()
    assert not spool.usable
    with pytest.raises(SpoolError):
        await spool.append(b"x", 1)


async def test_draining_reads_only_what_is_left(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.open()
    for n in range(5):
        await spool.append(b"%d" % n, n)
    found = await spool.oldest_segment()
    assert found is not None
    segment, records = found
    # Two records went into Redis before the drainer was interrupted (say, Redis failed).
    spool.mark_drained(segment, 2, records[2].spooled_at_ms)
    assert spool.depth == 3
    assert spool.oldest_ms == 2
    again = await spool.oldest_segment()
    assert again is not None
    assert [record.payload for record in again[1]] == [b"2", b"3", b"4"]
    await spool.close()


async def test_write_error_is_raised_to_the_caller(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.open()
    await spool.append(b"before", 1)
    # Point the open segment at a device that is always full (ENOSPC), as a full disk would.
    assert spool._active_fd is not None
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, spool._active_fd)
    os.close(full)
    with pytest.raises(SpoolError):
        await spool.append(b"lost", 2)
    assert spool.depth == 1
    assert not spool.usable
