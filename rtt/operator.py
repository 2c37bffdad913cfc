"""What the operator commands (`stats`, `dlq`, `silence`, `groups`) share: finding Redis,
and one line, not a traceback, when it cannot be reached."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.connections import REDIS_DOWN, create_redis, explain_redis_error, plain_port_hint
from shared.embedded import running_url
from shared.redis_urls import mask_url
from shared.settings import REDIS_SETTINGS, Settings

__all__ = ["OPERATOR_SETTINGS", "run_with_redis"]

OPERATOR_SETTINGS = (
    *REDIS_SETTINGS,
    "key_prefix",
    "shards",
    "log_format",
    "log_level",
    "redis_timeout",
    "data_dir",
)


def _target(parser: argparse.ArgumentParser, settings: Settings) -> tuple[Settings, str]:
    """RTT_REDIS_URL, or else the embedded server a running `rtt serve` started here; and
    where the URL came from, for the error line."""
    if settings.redis_url:
        return settings, ""
    data_dir = Path(settings.data_dir) / "valkey"
    url = running_url(data_dir)
    if url is None:
        parser.error(
            "RTT_REDIS_URL (or --redis-url) is required, or a running `rtt serve` in this directory"
        )
    found = f" (the URL `rtt serve` left in {data_dir}: is it still running?)"
    return msgspec.structs.replace(settings, redis_url=url), found


def run_with_redis(
    parser: argparse.ArgumentParser,
    settings: Settings,
    work: Callable[[Redis, Settings], Awaitable[int]],
) -> int:
    """Run `work` with a client; Redis down or refusing is one line naming it, exit 1."""
    settings, found = _target(parser, settings)
    url = mask_url(settings.redis_url or "")

    async def run() -> int:
        redis = create_redis(settings)
        try:
            return await work(redis, settings)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except BrokenPipeError:
        raise  # the reader of our output left (`| head`), not Redis: rtt.cli handles it
    except REDIS_DOWN as exc:
        # TLS, password and ACL refusals name the setting to change.
        line = explain_redis_error(exc, settings) or (
            f"cannot reach Redis at {url}{found}: {exc}{plain_port_hint(exc, settings)}"
        )
        print(f"{parser.prog}: {line}", file=sys.stderr)
    except RedisError as exc:
        line = explain_redis_error(exc, settings) or f"Redis at {url} answered: {exc}"
        print(f"{parser.prog}: {line}", file=sys.stderr)
    return 1
