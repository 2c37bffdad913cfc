"""Operator commands: `rtt stats` and `rtt dlq list | show | replay | purge`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from shared.cli_support import require_redis_url, settings_from_args, settings_parser
from shared.connections import create_redis
from shared.keys import Keys
from shared.settings import Settings, add_arguments

from . import dlq
from .stats import Snapshot, take_snapshot

__all__ = ["dlq_main", "stats_main"]

ADMIN_SETTINGS = (
    "redis_url", "key_prefix", "shards", "log_format", "log_level", "redis_timeout", "data_dir",
)  # fmt: skip


def _client(parser: argparse.ArgumentParser, settings: Settings) -> Redis:
    return create_redis(require_redis_url(parser, settings))


# --- rtt stats ----------------------------------------------------------------------------


def stats_main(argv: Sequence[str] | None = None) -> int:
    parser = settings_parser(
        "rtt stats", "Stream lengths, lag and pending per group, DLQ size.", ADMIN_SETTINGS
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args, settings = settings_from_args(parser, argv, ADMIN_SETTINGS, component="admin")
    redis = _client(parser, settings)

    async def run() -> Snapshot:
        try:
            return await take_snapshot(redis, Keys(settings.key_prefix, settings.shards))
        finally:
            await redis.aclose()

    snap = asyncio.run(run())
    if args.json:
        print(json.dumps(snap.to_json(), indent=2))
    else:
        print(_stats_table(snap))
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _stats_table(snap: Snapshot) -> str:
    lines = []
    for stream in snap.streams:
        lines.append(
            f"stream {stream.stream}  length {stream.length}  "
            f"first {stream.first_id or '-'}  last {stream.last_id or '-'}"
        )
        if not stream.groups:
            lines.append("  (no consumer group yet)")
            continue
        header = ("group", "lag", "pending", "oldest pending", "consumers", "dead letters")
        rows = [header] + [
            (
                g.name,
                "?" if g.lag is None else str(g.lag),
                str(g.pending),
                _age(g.oldest_pending_age_s),
                str(g.consumers),
                str(snap.dlq_by_group.get(g.name, 0)),
            )
            for g in stream.groups
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [
                cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  " + "  ".join(cells))
    by_group = ", ".join(f"{g} {n}" for g, n in sorted(snap.dlq_by_group.items()))
    lines.append(f"dead letters: {snap.dlq_length}" + (f"  ({by_group})" if by_group else ""))
    return "\n".join(lines)


# --- rtt dlq ------------------------------------------------------------------------------


def _dlq_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtt dlq", description="Inspect and re-drive dead letters (rtt:dlq)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    listing = commands.add_parser("list", help="dead letters, oldest first")
    listing.add_argument("--group", help="only this consumer group")
    listing.add_argument("--limit", type=int, default=100, help="at most this many [100]")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    show = commands.add_parser("show", help="one dead letter in full, body included")
    show.add_argument("id", help="its id on rtt:dlq, as `list` prints it")
    for name, text in (
        ("replay", "put dead letters back on their stream, for their group only"),
        ("purge", "delete dead letters"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("ids", nargs="*", metavar="id", help="ids on rtt:dlq")
        sub.add_argument("--all", action="store_true", help="every dead letter (of --group)")
        sub.add_argument("--group", help="only this consumer group")
    for sub in commands.choices.values():
        add_arguments(sub, ADMIN_SETTINGS)
    return parser


def _letter_json(letter: dlq.DeadLetter, *, body: bool) -> dict[str, Any]:
    result: dict[str, Any] = {
        "id": letter.id,
        "group": letter.group,
        "stream": letter.stream,
        "original_id": letter.original_id,
        "attempts": letter.attempts,
        "error": letter.error,
        "worker_id": letter.consumer,
        "failed_at": _when(letter.failed_at_ms),
        "type": letter.entry.type,
        "request_id": letter.entry.request_id,
    }
    if body:
        try:
            result["body"] = json.loads(letter.entry.body)
        except ValueError:
            result["body"] = letter.entry.body.decode(errors="replace")
    return result


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def _dlq(args: argparse.Namespace, redis: Redis, keys: Keys) -> int:
    if args.command == "list":
        letters = await dlq.read_all(redis, keys.dlq, group=args.group, limit=args.limit)
        if args.json:
            for letter in letters:
                print(json.dumps(_letter_json(letter, body=False)))
            return 0
        for letter in letters:
            error = letter.error if len(letter.error) <= 80 else letter.error[:77] + "..."
            print(
                f"{letter.id}  {letter.group}  {letter.stream} {letter.original_id}  "
                f"attempts {letter.attempts}  {_when(letter.failed_at_ms)}  {error}"
            )
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
        return 0
    if args.command == "show":
        found = await dlq.read(redis, keys.dlq, [args.id])
        if not found:
            print(f"rtt dlq: no dead letter {args.id}", file=sys.stderr)
            return 1
        print(json.dumps(_letter_json(found[0], body=True), indent=2))
        return 0
    if bool(args.ids) == bool(args.all):
        print(f"rtt dlq {args.command}: give ids, or --all", file=sys.stderr)
        return 2
    if args.all:
        letters = await dlq.read_all(redis, keys.dlq, group=args.group)
    else:
        letters = await dlq.read(redis, keys.dlq, args.ids)
        if args.group:
            letters = [letter for letter in letters if letter.group == args.group]
        missing = set(args.ids) - {letter.id for letter in letters}
        if missing:
            print(f"rtt dlq: no dead letter {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
    if args.command == "replay":
        new_ids = await dlq.replay(redis, keys.dlq, letters)
        for letter, new_id in zip(letters, new_ids, strict=True):
            print(f"{letter.id} -> {letter.stream} {new_id} for group {letter.group}")
        print(f"replayed {len(new_ids)} dead letter(s)", file=sys.stderr)
    else:
        deleted = await dlq.delete(redis, keys.dlq, letters)
        print(f"purged {deleted} dead letter(s)", file=sys.stderr)
    return 0


def dlq_main(argv: Sequence[str] | None = None) -> int:
    parser = _dlq_parser()
    args, settings = settings_from_args(parser, argv, ADMIN_SETTINGS, component="admin")
    redis = _client(parser, settings)

    async def run() -> int:
        try:
            return await _dlq(args, redis, Keys(settings.key_prefix, settings.shards))
        finally:
            await redis.aclose()

    return asyncio.run(run())
