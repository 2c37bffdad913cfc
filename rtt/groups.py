"""`rtt groups list | remove`: the consumer groups, and retiring one."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from redis.asyncio import Redis

from shared.cli_support import settings_from_args
from shared.keys import Keys
from shared.settings import Settings, add_arguments
from worker.groups import GroupInUse, list_groups, remove_group

from .operator import OPERATOR_SETTINGS, run_with_redis

__all__ = ["main"]

EXAMPLE = """retiring a consumer:
  1. stop running it: remove it from every worker's --consumer / RTT_CONSUMER (or
     uninstall its plugin) and restart the workers;
  2. rtt groups list                # its LIVE column drops to 0 within RTT_HEARTBEAT_TTL
  3. rtt groups remove NAME         # retention can now trim what the group held
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtt groups",
        description="The consumer groups on the event streams; remove one to retire a "
        "consumer, so that retention can trim the entries it never acknowledged.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,remove}")
    listing = actions.add_parser("list", help="every group: members, live members, lag, pending")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    remove = actions.add_parser("remove", help="remove a group from every event stream")
    remove.add_argument("name", help="the group (the consumer's name)")
    remove.add_argument(
        "--force", action="store_true", help="even if a member is alive (its workers recreate it)"
    )
    for sub in (listing, remove):
        add_arguments(sub, OPERATOR_SETTINGS)
    return parser


async def _list(redis: Redis, keys: Keys, *, as_json: bool) -> int:
    groups = await list_groups(redis, keys)
    if as_json:
        for group in groups:
            line = {
                "group": group.name,
                "streams": group.streams,
                "members": group.members,
                "live": group.live,
                "lag": group.lag,
                "pending": group.pending,
            }
            print(json.dumps(line))
        return 0
    if not groups:
        print("no consumer groups")
        return 0
    width = max(len("GROUP"), *(len(group.name) for group in groups))
    print(f"{'GROUP':<{width}}  {'LIVE':>4}  {'MEMBERS':>7}  {'LAG':>9}  {'PENDING':>9}")
    for group in groups:
        lag = "?" if group.lag is None else str(group.lag)
        print(
            f"{group.name:<{width}}  {len(group.live):>4}  {len(group.members):>7}  "
            f"{lag:>9}  {group.pending:>9}"
        )
    return 0


async def _remove(redis: Redis, keys: Keys, name: str, *, force: bool) -> int:
    try:
        removed = await remove_group(redis, keys, name, force=force)
    except KeyError:
        print(f"rtt groups: no group {name!r} on the event streams", file=sys.stderr)
        return 1
    except GroupInUse as exc:
        print(
            f"rtt groups: {exc}; stop the workers that run it first, or give --force",
            file=sys.stderr,
        )
        return 1
    print(f"removed group {name} from {', '.join(removed)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, settings = settings_from_args(parser, argv, OPERATOR_SETTINGS, component="admin")

    async def run(redis: Redis, settings: Settings) -> int:
        keys = Keys(settings.key_prefix, settings.shards)
        if args.action == "list":
            return await _list(redis, keys, as_json=args.json)
        return await _remove(redis, keys, args.name, force=args.force)

    return run_with_redis(parser, settings, run)
