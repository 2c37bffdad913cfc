"""`rtt`: one command over the receiver, the worker and the operator tools."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shared.cli_support import settings_from_args, settings_parser
from shared.settings import ALL_SETTINGS, overrides_from

__all__ = ["main"]

USAGE = """usage: rtt <command> [options]

commands:
  serve      embedded Redis (unless RTT_REDIS_URL is set), a receiver and a worker
  receiver   the webhook receiver alone
  worker     the worker alone (--consumer pkg.module:name adds a consumer)
  send       post realistic events to a receiver
  silence    mute alerts for a while: add, list, remove
  stats      stream lengths, lag and pending per consumer group, DLQ size
  dlq        dead letters: list, show, replay, purge

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


COMMANDS = {"serve": _serve, "receiver": _receiver, "worker": _worker, "send": _send}
COMMANDS["silence"] = _silence


def _stats(argv: Sequence[str]) -> int:
    from worker.admin import stats_main

    return stats_main(argv)


def _dlq(argv: Sequence[str]) -> int:
    from worker.admin import dlq_main

    return dlq_main(argv)


COMMANDS["stats"] = _stats
COMMANDS["dlq"] = _dlq


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"rtt: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return command(argv[1:])
