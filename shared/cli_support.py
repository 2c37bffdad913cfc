"""What every entry point does first: parse flags into settings, set up logging."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence

from .logs import configure_logging
from .settings import ConfigError, Settings, add_arguments, load_settings, overrides_from

__all__ = ["settings_from_args", "settings_parser"]


def settings_parser(prog: str, description: str, names: Iterable[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, names)
    return parser


def settings_from_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    names: Iterable[str],
    *,
    component: str,
) -> tuple[argparse.Namespace, Settings]:
    """Parse, build settings (exit 2 naming the variable on a bad value), configure logs."""
    names = tuple(names)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(overrides=overrides_from(args, names), names=names)
    except ConfigError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(
        component=component,
        level=settings.log_level,
        fmt=settings.log_format,
        phone_numbers=settings.log_phone_numbers,
    )
    return args, settings


def require_redis_url(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Receiver and worker need a server of their own: one line and exit 2 without one."""
    if not settings.redis_url:
        print(
            f"{parser.prog}: configuration error: RTT_REDIS_URL (or --redis-url) is required;"
            " `rtt serve` embeds a server",
            file=sys.stderr,
        )
        raise SystemExit(2)
