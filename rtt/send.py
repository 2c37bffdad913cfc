"""`rtt send`: post realistic events to a receiver and report what came back."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp

from .samples import CAUSES, EVENT_TYPES, sample_body

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtt send", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080/realTimeTranscriptionEvents")
    parser.add_argument(
        "--type", default="stopped", help=f"one of {', '.join(EVENT_TYPES)}, or 'mixed'"
    )
    parser.add_argument("--cause", help="cause for stopped/rejected (default: closed)")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--user", help="Basic auth user:password")
    parser.add_argument("--seed", type=int, default=None)
    return parser


async def _send(args: argparse.Namespace) -> Counter[int]:
    rng = random.Random(args.seed)
    statuses: Counter[int] = Counter()
    auth = None
    if args.user:
        user, _, password = args.user.partition(":")
        auth = aiohttp.BasicAuth(user, password)
    remaining = iter(range(args.count))

    async def one(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            kind = rng.choice(list(EVENT_TYPES)) if args.type == "mixed" else args.type
            event_type = EVENT_TYPES.get(kind, kind)
            cause = args.cause if event_type in CAUSES else None
            body = sample_body(event_type, cause=cause, rng=rng)
            headers = {"Content-Type": "application/json"}
            async with session.post(args.url, data=body, headers=headers, auth=auth) as resp:
                await resp.read()
                statuses[resp.status] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(max(1, args.concurrency))))
    return statuses


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    statuses = asyncio.run(_send(args))
    elapsed = time.perf_counter() - started
    summary = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    print(f"sent {sum(statuses.values())} in {elapsed:.2f}s ({summary})")
    return 0 if set(statuses) <= {204} else 1
