"""`rtt stats`: stream lengths, lag and pending per consumer group, DLQ size."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from redis.asyncio import Redis

from shared.cli_support import settings_from_args, settings_parser
from shared.keys import Keys
from shared.settings import Settings
from worker.stats import Snapshot, take_snapshot

from .operator import OPERATOR_SETTINGS, run_with_redis

__all__ = ["main", "stats_table"]


def _parser() -> argparse.ArgumentParser:
    parser = settings_parser(
        "rtt stats", "Stream lengths, lag and pending per group, DLQ size.", OPERATOR_SETTINGS
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    return parser


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def stats_table(snap: Snapshot) -> str:
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, settings = settings_from_args(parser, argv, OPERATOR_SETTINGS, component="admin")

    async def run(redis: Redis, settings: Settings) -> int:
        snap = await take_snapshot(redis, Keys(settings.key_prefix, settings.shards))
        print(json.dumps(snap.to_json(), indent=2) if args.json else stats_table(snap))
        return 0

    return run_with_redis(parser, settings, run)
