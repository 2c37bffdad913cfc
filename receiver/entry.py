"""`rtt receiver` / `python -m receiver`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from shared.cli_support import require_redis_url, settings_from_args, settings_parser
from shared.lifeline import watch_parent
from shared.listen import ListenError, check_listen
from shared.loop import run
from shared.settings import RECEIVER_SETTINGS, Settings
from shared.tracing import configure_tracing, tracer

from .server import serve
from .supervisor import supervise

__all__ = ["main"]


def _slot(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        slot = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected index/count, got {text!r}") from None
    if not 0 <= slot[0] < slot[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= index < count, got {text!r}")
    return slot


def main(argv: Sequence[str] | None = None, prog: str = "rtt receiver") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = settings_parser(prog, "Receive Bandwidth transcription webhooks.", RECEIVER_SETTINGS)
    # Set by the supervisor of `--processes N` on each child it starts.
    parser.add_argument("--slot", type=_slot, help=argparse.SUPPRESS)
    args, settings = settings_from_args(parser, argv, RECEIVER_SETTINGS, component="receiver")
    require_redis_url(parser, settings)
    watch_parent(_grace_s(settings))
    if settings.processes == 1 or args.slot is not None:
        try:
            configure_tracing("receiver", os.environ)
        except RuntimeError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
    try:
        return _run(args, settings, argv, prog)
    except ListenError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    finally:
        tracer().shutdown()


def _run(args: argparse.Namespace, settings: Settings, argv: list[str], prog: str) -> int:
    if args.slot is not None:
        index, processes = args.slot
        run(serve(settings, index=index, processes=processes, reuse_port=True))
        return 0
    if settings.processes > 1:
        # The children bind with SO_REUSEPORT, which a busy port may not refuse them.
        check_listen(settings.host, settings.port, "RTT_PORT")
        return supervise(settings, argv, prog=prog)
    run(serve(settings))
    return 0


def _grace_s(settings: Settings) -> float:
    """How long a stop may take: requests in flight, then the last drain of the spool."""
    return (
        settings.shutdown_timeout.total_seconds()
        + settings.store_timeout.total_seconds()
        + settings.read_timeout.total_seconds()
        + 10
    )
