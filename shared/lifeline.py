"""Children that die with their supervisor, however it dies.

`rtt serve` and `receiver --processes` start children that must not outlive them: an
orphaned receiver keeps the port, an orphaned Valkey keeps writing the AOF that the next
`rtt serve` opens. A signal handler in the supervisor cannot help against SIGKILL, so:

- Our own children (receiver, worker) get the read end of a pipe whose write end only the
  supervisor holds. When the supervisor exits, whatever the cause, the kernel closes that
  end and the child reads end-of-file: it stops as on SIGTERM (requests in flight finish,
  the spool is flushed), and is killed if it is still there after its grace period. This
  works on every POSIX system and has no race: a child started after its parent died
  reads end-of-file at once.
- A program we cannot change (the Valkey server) gets `PR_SET_PDEATHSIG` on Linux, set
  between fork and exec: SIGTERM, on which Valkey flushes its AOF and exits.

Children are also started with `python -P`, so a `worker.py` or `shared/` in the user's
directory can never replace ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping

__all__ = [
    "PROG_ENV",
    "Lifeline",
    "die_with_parent_preexec",
    "python_command",
    "watch_parent",
]

# Set by a supervisor in its children's environment. Not `RTT_` settings: internal.
LIFELINE_ENV = "_RTT_LIFELINE_FD"
# The name a child uses in its one-line errors, so they read `rtt serve: ...`.
PROG_ENV = "_RTT_PROG"

_PR_SET_PDEATHSIG = 1


def python_command(module: str, *args: str) -> list[str]:
    """`python -P -m module`: -P keeps the current directory off the import path."""
    return [sys.executable, "-P", "-m", module, *args]


class Lifeline:
    """The supervisor's side: a pipe that closes when this process ends."""

    def __init__(self) -> None:
        # Both ends are non-inheritable: only children given `pass_fds` get the read end,
        # and no child ever gets the write end, which would keep the pipe open.
        self._read, self._write = os.pipe()

    @property
    def pass_fds(self) -> tuple[int]:
        return (self._read,)

    def child_env(self, env: Mapping[str, str], prog: str | None = None) -> dict[str, str]:
        result = {**env, LIFELINE_ENV: str(self._read)}
        if prog is not None:
            result[PROG_ENV] = prog
        return result

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def watch_parent(grace_s: float) -> None:
    """In a child: stop when the supervisor that started it is gone.

    At end-of-file on the lifeline the process sends itself SIGTERM, its usual graceful
    stop; if it still runs `grace_s` later, SIGKILL. Does nothing outside a supervisor.
    """
    raw = os.environ.pop(LIFELINE_ENV, None)
    if raw is None:
        return
    try:
        fd = int(raw)
        os.set_inheritable(fd, False)  # not into this process's own children
    except (ValueError, OSError):
        return
    threading.Thread(target=_watch, args=(fd, grace_s), name="lifeline", daemon=True).start()


def _watch(fd: int, grace_s: float) -> None:
    try:
        while os.read(fd, 64):
            pass  # the supervisor never writes; only end-of-file matters
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent_preexec(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes a program we cannot change get `sig` when we die.

    Linux only. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, so
    it is set only from the main thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl call took effect
            os.kill(os.getpid(), sig)

    return preexec
