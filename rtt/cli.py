"""`rtt`: one command over the receiver, the worker and the operator tools.

Every command's arguments are parsed here, in `rtt/`; the work is done where it belongs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

from shared.cli_support import settings_from_args, settings_parser
from shared.settings import ALL_SETTINGS, overrides_from

__all__ = ["main"]

USAGE = """usage: rtt <command> [options]
       rtt --version

commands:
  serve      embedded Redis (unless RTT_REDIS_URL is set), a receiver and a worker
  receiver   the webhook receiver alone
  worker     the worker alone (--consumer pkg.module:name adds a consumer)
  send       post realistic events to a receiver
  silence    mute alerts for a while: add, list, remove
  stats      stream lengths, lag and pending per consumer group, DLQ size
  dlq        dead letters: list, show, replay, purge
  groups     consumer groups: list, remove (retire a consumer)
  health     exit 0 if this container's receiver or worker serves (a health check)

`rtt <command> --help` lists every option and its environment variable.
"""


def _serve(argv: Sequence[str]) -> int:
    from .serve import serve

    parser = settings_parser("rtt serve", "Run everything on one machine.", ALL_SETTINGS)
    args, settings = settings_from_args(parser, argv, ALL_SETTINGS, component="serve")
    return serve(settings, overrides_from(args, ALL_SETTINGS))


def _receiver(argv: Sequence[str]) -> int:
    from receiver.entry import main as receiver_main

    return receiver_main(argv)


def _worker(argv: Sequence[str]) -> int:
    from worker.entry import main as worker_main

    return worker_main(argv)


def _send(argv: Sequence[str]) -> int:
    from .send import main as send_main

    return send_main(argv)


def _silence(argv: Sequence[str]) -> int:
    from .silence import main as silence_main

    return silence_main(argv)


def _stats(argv: Sequence[str]) -> int:
    from .stats import main as stats_main

    return stats_main(argv)


def _dlq(argv: Sequence[str]) -> int:
    from .dlq import main as dlq_main

    return dlq_main(argv)


def _health(argv: Sequence[str]) -> int:
    from .health import main as health_main

    return health_main(argv)


def _groups(argv: Sequence[str]) -> int:
    from .groups import main as groups_main

    return groups_main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "serve": _serve,
    "receiver": _receiver,
    "worker": _worker,
    "send": _send,
    "silence": _silence,
    "stats": _stats,
    "dlq": _dlq,
    "groups": _groups,
    "health": _health,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in {"-V", "--version"}:
        print(f"rtt {version('rtt-events')}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"rtt: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        code = command(argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output went away (`rtt dlq show ID | head`). As the Python docs
        # advise (signal module, "Note on SIGPIPE"): point stdout at devnull so the flush
        # at exit cannot fail again, and exit 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code
