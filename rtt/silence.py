"""`rtt silence add / list / remove`: mute alerts for a while, for every worker."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import partial

import msgspec
from redis.asyncio import Redis

from shared.cli_support import settings_from_args
from shared.keys import Keys
from shared.settings import DURATION_FORMS, Settings, add_arguments, parse_duration
from worker.alerts.silences import (
    Silence,
    add_silence,
    list_silences,
    parse_matchers,
    remove_silence,
)

from .operator import OPERATOR_SETTINGS, run_with_redis

__all__ = ["main"]

EXAMPLE = """examples:
  rtt silence add --match cause=connection-error --match destination_host=asr.example.com \\
      --for 2h --comment "ASR maintenance, CHG-1234"
  rtt silence list
  rtt silence remove 3f9c0a7b2e11

fields: any alert field (cause, event_type, severity, application_id, account_id, call_id,
transcription_id, transcription_name, destination, error_message) or destination_host;
values may use shell wildcards: --match destination=wss://asr.example.com/*
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtt silence",
        description="Mute alerts that match some fields for a while. Muted alerts are still "
        "logged (at info) and counted; every worker honours a silence at once.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{add,list,remove}")
    add = actions.add_parser("add", help="add a silence; prints its id")
    add.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        required=True,
        help="alert field and value (repeat: all must match)",
    )
    add.add_argument("--for", dest="duration", required=True, help="how long: 30m, 2h, 1d")
    add.add_argument("--comment", default="", help="why, for the next person on call")
    add.add_argument("--author", default=None, help="who (default: your user name)")
    listing = actions.add_parser("list", help="active silences and how many alerts each muted")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    remove = actions.add_parser("remove", help="end a silence now")
    remove.add_argument("id", help="the silence id, as `add` printed it")
    for sub in (add, listing, remove):
        add_arguments(sub, OPERATOR_SETTINGS)
    return parser


def _duration(text: str) -> timedelta:
    try:
        value = msgspec.convert(parse_duration(text), timedelta, strict=False)
    except msgspec.ValidationError:
        raise ValueError(f"--for: got {text!r}; expected a duration: {DURATION_FORMS}") from None
    if value <= timedelta(0):
        raise ValueError(f"--for {text!r}: must be longer than zero")
    return value


def _remaining(silence: Silence) -> str:
    seconds = max(0, int(silence.ends_at_ms / 1000 - time.time()))
    return str(timedelta(seconds=seconds))


async def _run(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    keys = Keys(settings.key_prefix, settings.shards)
    if args.action == "add":
        silence = await add_silence(
            redis,
            keys,
            parse_matchers(args.match),
            _duration(args.duration),
            comment=args.comment,
            created_by=args.author or getpass.getuser(),
        )
        ends = silence.ends_at.isoformat(timespec="seconds")
        print(f"{silence.id}  silenced until {ends} ({_remaining(silence)})")
        return 0
    if args.action == "remove":
        if await remove_silence(redis, keys, args.id):
            print(f"{args.id}  removed")
            return 0
        print(f"rtt silence: no active silence {args.id!r}", file=sys.stderr)
        return 1
    rows = await list_silences(redis, keys)
    if args.json:
        for silence, hits in rows:
            line = msgspec.structs.asdict(silence) | {"muted": hits}
            print(msgspec.json.encode(line).decode())
        return 0
    if not rows:
        print("no active silences")
        return 0
    print(f"{'ID':<12}  {'ENDS (UTC)':<19}  {'LEFT':>8}  {'MUTED':>5}  MATCHERS / COMMENT")
    for silence, hits in rows:
        matchers = " ".join(f"{k}={v}" for k, v in silence.matchers.items())
        ends = silence.ends_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{silence.id:<12}  {ends:<19}  {_remaining(silence):>8}  {hits:>5}  {matchers}")
        if silence.comment or silence.created_by:
            print(f"{'':<52}{silence.comment} ({silence.created_by or 'unknown'})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, settings = settings_from_args(parser, argv, OPERATOR_SETTINGS, component="silence")
    try:
        return run_with_redis(parser, settings, partial(_run, args))
    except ValueError as exc:
        print(f"rtt silence: {exc}", file=sys.stderr)
        return 2
