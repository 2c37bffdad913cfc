"""`rtt dlq list | show | replay | purge`: inspect and re-drive dead letters."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from shared.cli_support import settings_from_args
from shared.keys import Keys
from shared.settings import Settings, add_arguments
from worker.dlq import DeadLetter, delete, read, read_all, replay

from .operator import OPERATOR_SETTINGS, run_with_redis

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
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
        add_arguments(sub, OPERATOR_SETTINGS)
    return parser


def _letter_json(letter: DeadLetter, *, body: bool) -> dict[str, Any]:
    result: dict[str, Any] = {
        "id": letter.id,
        "group": letter.group,
        "stream": letter.stream,
        "original_id": letter.original_id,
        "attempts": letter.attempts,
        "error": letter.error,
        "worker_id": letter.worker_id,
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


async def _run(args: argparse.Namespace, redis: Redis, keys: Keys) -> int:
    if args.command == "list":
        letters = await read_all(redis, keys.dlq, group=args.group, limit=args.limit)
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
        found = await read(redis, keys.dlq, [args.id])
        if not found:
            print(f"rtt dlq: no dead letter {args.id}", file=sys.stderr)
            return 1
        print(json.dumps(_letter_json(found[0], body=True), indent=2))
        return 0
    if bool(args.ids) == bool(args.all):
        print(f"rtt dlq {args.command}: give ids, or --all", file=sys.stderr)
        return 2
    if args.all:
        letters = await read_all(redis, keys.dlq, group=args.group)
    else:
        letters = await read(redis, keys.dlq, args.ids)
        if args.group:
            letters = [letter for letter in letters if letter.group == args.group]
        missing = set(args.ids) - {letter.id for letter in letters}
        if missing:
            print(f"rtt dlq: no dead letter {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
    if args.command == "replay":
        new_ids = await replay(redis, keys.dlq, letters)
        for letter, new_id in zip(letters, new_ids, strict=True):
            print(f"{letter.id} -> {letter.stream} {new_id} for group {letter.group}")
        print(f"replayed {len(new_ids)} dead letter(s)", file=sys.stderr)
    else:
        deleted = await delete(redis, keys.dlq, letters)
        print(f"purged {deleted} dead letter(s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, settings = settings_from_args(parser, argv, OPERATOR_SETTINGS, component="admin")

    async def run(redis: Redis, settings: Settings) -> int:
        return await _run(args, redis, Keys(settings.key_prefix, settings.shards))

    return run_with_redis(parser, settings, run)
