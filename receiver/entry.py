"""`rtt receiver` / `python -m receiver`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.cli_support import settings_from_args, settings_parser
from shared.settings import RECEIVER_SETTINGS

from .server import serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "rtt receiver") -> int:
    parser = settings_parser(prog, "Receive Bandwidth transcription webhooks.", RECEIVER_SETTINGS)
    _, settings = settings_from_args(parser, argv, RECEIVER_SETTINGS, component="receiver")
    if not settings.redis_url:
        parser.error("RTT_REDIS_URL (or --redis-url) is required; `rtt serve` embeds a server")
    asyncio.run(serve(settings))
    return 0
