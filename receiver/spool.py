"""The local spool: an fsync'ed, append-only log that keeps events while Redis cannot.

One directory, owned by one process at a time (an exclusive `flock` on `lock`), holds
segment files `<sequence>.seg`. A record is `length | crc32 | spooled_at_ms | payload`;
a record torn by a crash fails its length or checksum, which ends the reading of that
segment and nothing else. A process never appends to a segment it did not create, so a
torn record can only be the tail of an older segment.

Appends are group-committed: appends that arrive while a write is in flight share the
next write and its fsync, done in a thread so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from shared.logs import get_logger

__all__ = ["Record", "Segment", "Spool", "SpoolError"]

log = get_logger()

_HEADER = struct.Struct("<IIq")  # payload length, crc32 of (spooled_at_ms, payload), spooled_at_ms
_SUFFIX = ".seg"
SEGMENT_MAX_BYTES = 4 << 20


class SpoolError(Exception):
    """The spool could not take a record: no directory, disk full, I/O error."""


@dataclass(frozen=True, slots=True)
class Record:
    spooled_at_ms: int
    payload: bytes


@dataclass(slots=True)
class Segment:
    path: Path
    # Records in the file not yet drained, and when the first of them was spooled.
    remaining: int = 0
    oldest_ms: int | None = None
    size: int = 0


def encode_record(payload: bytes, spooled_at_ms: int) -> bytes:
    stamp = struct.pack("<q", spooled_at_ms)
    crc = zlib.crc32(payload, zlib.crc32(stamp))
    return _HEADER.pack(len(payload), crc, spooled_at_ms) + payload


def read_records(data: bytes) -> tuple[list[Record], int | None]:
    """The intact records of a segment, and the offset of a torn or corrupt one (None if none)."""
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            return records, offset
        length, crc, at_ms = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if (
            len(payload) < length
            or zlib.crc32(payload, zlib.crc32(data[offset + 8 : start])) != crc
        ):
            return records, offset
        records.append(Record(at_ms, payload))
        offset = start + length
    return records, None


@dataclass(slots=True)
class _Pending:
    chunks: list[bytes] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    oldest_ms: int | None = None


class Spool:
    """Append from request handlers; drain oldest-first from one drainer task."""

    def __init__(self, directory: str | Path, *, segment_max_bytes: int = SEGMENT_MAX_BYTES):
        self.directory = Path(directory)
        self._segment_max_bytes = segment_max_bytes
        self._lock_fd: int | None = None
        self._sealed: deque[Segment] = deque()
        self._active: Segment | None = None
        self._active_fd: int | None = None
        self._next_sequence = 0
        self._pending = _Pending()
        self._writing: _Pending | None = None
        self._writer: asyncio.Task[None] | None = None
        # Serialises the thread that writes with sealing and opening of segments.
        self._io = asyncio.Lock()
        self._depth = 0
        self._unscanned: list[Path] = []
        self._closed = False
        self.error: str | None = "not opened"

    # --- lifetime ----------------------------------------------------------------------

    async def open(self) -> bool:
        """Lock the directory and list what a previous process left. False if unusable.

        Only file names are read here, so a large spool does not delay the start; `scan`
        reads the records later.
        """
        if self._lock_fd is not None:
            return True
        if self._closed:
            return False
        try:
            self._unscanned = await asyncio.to_thread(self._open_sync)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self.error:  # once, not at every readiness probe that retries
                log.error("spool_unusable", directory=str(self.directory), error=error)
            self.error = error
            return False
        self.error = None
        return True

    def _open_sync(self) -> list[Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise BlockingIOError(f"{self.directory} is used by another process") from None
        self._lock_fd = lock_fd
        left = sorted(self.directory.glob("*" + _SUFFIX))
        for path in left:
            self._next_sequence = max(self._next_sequence, int(path.stem) + 1)
        return left

    @property
    def left_over(self) -> bool:
        """A previous process left segments that `scan` has not counted yet."""
        return bool(self._unscanned)

    async def scan(self) -> None:
        """Count the records a previous process left; they drain before anything newer."""
        if not self._unscanned:
            return
        found = await asyncio.to_thread(self._scan_sync, self._unscanned)
        self._unscanned = []
        # Segments sealed since the start are newer: the old ones go in front of them.
        self._sealed.extendleft(reversed([segment for segment, _ in found]))
        for segment, torn_at in found:
            self._depth += segment.remaining
            if torn_at is not None:
                log.warning(
                    "spool_record_torn",
                    segment=segment.path.name,
                    offset=torn_at,
                    kept=segment.remaining,
                )
        log.info(
            "spool_found", directory=str(self.directory), depth=sum(s.remaining for s, _ in found)
        )

    @staticmethod
    def _scan_sync(paths: list[Path]) -> list[tuple[Segment, int | None]]:
        found = []
        for path in paths:
            records, torn_at = read_records(path.read_bytes())
            if not records:
                path.unlink()
                continue
            segment = Segment(path, len(records), records[0].spooled_at_ms, path.stat().st_size)
            found.append((segment, torn_at))
        return found

    async def close(self) -> None:
        """Finish the writes under way, close the files, release the directory."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
        async with self._io:
            self._seal_sync()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._closed = True
        self.error = "closed"

    # --- state -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.error is None

    @property
    def held(self) -> bool:
        """This process holds the directory's lock: it can spool."""
        return self._lock_fd is not None

    @property
    def depth(self) -> int:
        """Records accepted and not yet drained, including those still being written."""
        return self._depth

    @property
    def oldest_ms(self) -> int | None:
        """When the oldest record not yet drained was spooled."""
        for segment in self._sealed:
            if segment.remaining:
                return segment.oldest_ms
        for holder in (self._active, self._writing, self._pending):
            if holder is not None and holder.oldest_ms is not None:
                return holder.oldest_ms
        return None

    # --- appending ---------------------------------------------------------------------

    async def append(self, payload: bytes, spooled_at_ms: int) -> None:
        """Return once the record is on disk (fsync'ed); raise SpoolError if it is not."""
        if self._lock_fd is None and not await self.open():
            raise SpoolError(self.error)
        waiter = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending.chunks.append(encode_record(payload, spooled_at_ms))
        pending.waiters.append(waiter)
        if pending.oldest_ms is None:
            pending.oldest_ms = spooled_at_ms
        self._depth += 1
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())
        await waiter

    async def _write_pending(self) -> None:
        try:
            while self._pending.chunks:
                batch, self._pending = self._pending, _Pending()
                self._writing = batch
                try:
                    async with self._io:
                        await asyncio.to_thread(self._write_sync, b"".join(batch.chunks))
                        assert self._active is not None
                        self._active.remaining += len(batch.chunks)
                        if self._active.oldest_ms is None:
                            self._active.oldest_ms = batch.oldest_ms
                        if self._active.size >= self._segment_max_bytes:
                            self._seal_sync()
                except OSError as exc:
                    self._depth -= len(batch.chunks)
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.error("spool_write_failed", directory=str(self.directory), error=self.error)
                    for waiter in batch.waiters:
                        if not waiter.done():
                            waiter.set_exception(SpoolError(self.error))
                else:
                    self.error = None
                    for waiter in batch.waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                finally:
                    self._writing = None
                    if self._active is not None and self._active_fd is None:
                        self._seal_sync()
        finally:
            self._writer = None

    def _write_sync(self, data: bytes) -> None:
        if self._active_fd is None:
            path = self.directory / f"{self._next_sequence:012d}{_SUFFIX}"
            self._next_sequence += 1
            self._active_fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600
            )
            self._active = Segment(path)
            _fsync_directory(self.directory)
        fd = self._active_fd
        assert self._active is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        except OSError:
            # Cut a partial write off, so later records follow the last intact one; if even
            # that fails, the file is given up (and sealed) and its reader stops at the damage.
            try:
                os.ftruncate(fd, self._active.size)
            except OSError:
                os.close(fd)
                self._active_fd = None
            raise
        self._active.size += len(data)

    def _seal_sync(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        if self._active is not None:
            if self._active.remaining:
                self._sealed.append(self._active)
            else:
                with contextlib.suppress(OSError):
                    self._active.path.unlink()
            self._active = None

    # --- draining ----------------------------------------------------------------------

    async def oldest_segment(self) -> tuple[Segment, list[Record]] | None:
        """The oldest segment with records left, sealing the one being written if need be."""
        await self.scan()
        if not self._sealed and self._active is not None and self._active.remaining:
            async with self._io:
                self._seal_sync()
        while self._sealed:
            segment = self._sealed[0]
            data = await asyncio.to_thread(segment.path.read_bytes)
            records, _ = read_records(data)
            if records:
                skip = max(0, len(records) - segment.remaining)
                return segment, records[skip:]
            await self.remove(segment)
        return None

    async def set_aside(self, record: Record) -> Path:
        """Keep a record Redis can never take (fsync'ed) outside the segments; its file."""
        path = self.directory / "unstorable.bin"
        data = encode_record(record.payload, record.spooled_at_ms)
        await asyncio.to_thread(_append_durably, path, data)
        return path

    def mark_drained(self, segment: Segment, count: int, next_oldest_ms: int | None) -> None:
        segment.remaining -= count
        segment.oldest_ms = next_oldest_ms
        self._depth -= count

    async def remove(self, segment: Segment) -> None:
        """Delete a drained segment; its records are in Redis now."""
        self._depth -= segment.remaining
        segment.remaining = 0
        if self._sealed and self._sealed[0] is segment:
            self._sealed.popleft()
        await asyncio.to_thread(_unlink_durably, segment.path)


def _append_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _unlink_durably(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
