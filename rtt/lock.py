"""One `rtt serve` per data directory.

Two would start two Valkey servers on one AOF, share one spool, and the first to stop
would delete the URL file the operator commands read. The lock is an `flock` on
`<RTT_DATA_DIR>/serve.lock`, which holds the pid of the `rtt serve` that took it. The
children inherit the locked file, so the directory stays taken until the last of them has
exited, even when `rtt serve` itself was killed. The kernel releases it with them: a
crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["DataDirInUse", "lock_data_dir"]

LOCK_FILE = "serve.lock"


class DataDirInUse(Exception):
    """Another `rtt serve` (or what it started, still stopping) has the data directory."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the directory for this process; the open descriptor holds the lock."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        raise DataDirInUse(_in_use_message(data_dir, holder)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


def _in_use_message(data_dir: Path, pid: int | None) -> str:
    where = f"{data_dir} (RTT_DATA_DIR)"
    if pid is None:
        return f"{where} is in use by another rtt serve"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return (
            f"{where} is still in use by the processes of rtt serve pid {pid}, which has "
            "exited; they are stopping, try again in a moment"
        )
    except PermissionError:
        pass
    return f"{where} is in use by rtt serve pid {pid}; stop it, or give this one another"
