"""`rtt send`: post realistic events to a receiver and report what came back.

The demo and load tool: every event type and cause, at a target rate (requests are
scheduled on a clock, so a slow receiver shows up as a lower achieved rate and longer
latencies, not as a politely slower client), over several connections, with Basic auth.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import msgspec
from tqdm import tqdm

from shared.settings import ConfigError, Settings, load_settings

from .samples import CAUSES, TYPE_BY_SHORT_NAME, sample_body

__all__ = ["Report", "SendOptions", "kinds", "main", "planned_bodies", "send_events"]

# Below this many events the run is short enough that a progress bar is noise.
_PROGRESS_FROM: Final = 200
_ALL_KINDS: Final[list[tuple[str, str | None]]] = [
    (event_type, cause)
    for event_type in TYPE_BY_SHORT_NAME.values()
    for cause in (CAUSES.get(event_type) or [None])  # type: ignore[list-item]
]


@dataclass(frozen=True, slots=True)
class SendOptions:
    url: str = "http://127.0.0.1:8080/realTimeTranscriptionEvents"
    type: str = "stopped"
    cause: str | None = None
    count: int = 1
    rate: float = 0.0  # events a second; 0: as fast as the connections allow
    concurrency: int = 1
    user: str | None = None
    seed: int | None = None
    timeout_s: float = 10.0
    progress: bool = True


class Report(msgspec.Struct, kw_only=True):
    sent: int
    elapsed_s: float
    rate_per_s: float
    target_rate_per_s: float | None
    concurrency: int
    statuses: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def all_accepted(self) -> bool:
        return all(status.startswith("2") for status in self.statuses)


def kinds(type_: str, cause: str | None, rng: random.Random) -> Iterator[tuple[str, str | None]]:
    """(eventType, cause) for each event: one type, a random mix, or every one in turn."""
    if type_ == "all":
        while True:
            yield from _ALL_KINDS
    while True:
        if type_ == "mixed":
            event_type = rng.choice(list(TYPE_BY_SHORT_NAME.values()))
        else:
            event_type = TYPE_BY_SHORT_NAME.get(type_, type_)
        causes = CAUSES.get(event_type)
        if causes is None:
            yield event_type, None
        elif cause in (None, "mixed"):
            yield event_type, (rng.choice(causes) if cause == "mixed" else causes[0])
        else:
            yield event_type, cause


def planned_bodies(options: SendOptions) -> Iterator[bytes]:
    """The bodies `send_events` posts, in order: with a seed, the same ones on every run
    (the failover tests count what a run stored by the ids it was given)."""
    rng = random.Random(options.seed)
    for event_type, cause in kinds(options.type, options.cause, rng):
        yield sample_body(event_type, cause=cause, rng=rng)


@dataclass
class _Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    if len(samples) == 1:
        only = round(samples[0], 2)
        return {"p50": only, "p90": only, "p99": only, "max": only}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 2),
        "p90": round(cuts[89], 2),
        "p99": round(cuts[98], 2),
        "max": round(max(samples), 2),
    }


async def send_events(options: SendOptions) -> Report:
    """Post `options.count` events and measure what came back."""
    tally = _Tally()
    plan = zip(range(options.count), planned_bodies(options), strict=False)
    interval_s = 1.0 / options.rate if options.rate > 0 else 0.0
    headers = {"Content-Type": "application/json"}
    if options.user:
        token = base64.b64encode(options.user.encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    bar = tqdm(
        total=options.count,
        unit="ev",
        file=sys.stderr,
        dynamic_ncols=True,
        # None: only on a terminal.
        disable=None if options.progress and options.count >= _PROGRESS_FROM else True,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(session: aiohttp.ClientSession) -> None:
        for index, body in plan:
            if interval_s:
                delay = started + index * interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent_at = time.perf_counter()
            try:
                async with session.post(options.url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            tally.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
            tally.statuses[status] += 1
            bar.update()

    connector = aiohttp.TCPConnector(limit=max(1, options.concurrency))
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(one(session) for _ in range(max(1, options.concurrency))))
    finally:
        bar.close()
    elapsed = loop.time() - started
    sent = sum(tally.statuses.values())
    return Report(
        sent=sent,
        elapsed_s=round(elapsed, 3),
        rate_per_s=round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        target_rate_per_s=options.rate or None,
        concurrency=options.concurrency,
        statuses=dict(sorted(tally.statuses.items())),
        latency_ms=_percentiles(tally.latencies_ms),
    )


# The receiver's settings that say where it listens: the default URL follows them.
URL_SETTINGS = ("host", "port", "path")
TYPES = (*TYPE_BY_SHORT_NAME, "mixed", "all")
KNOWN_CAUSES = sorted({cause for causes in CAUSES.values() for cause in causes})


def default_url(settings: Settings) -> str:
    """Where a receiver started with these settings listens, seen from this machine."""
    host = settings.host
    if host in {"0.0.0.0", "::", ""}:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{settings.path}"


def _parser(url: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtt send",
        description="Post realistic Bandwidth real-time transcription events to a receiver "
        "and report status counts, the achieved rate and latency percentiles.",
    )
    defaults = SendOptions()
    parser.add_argument(
        "--url",
        default=url,
        help=f"the receiver's events URL [from RTT_HOST, RTT_PORT and RTT_PATH: {url}]",
    )
    parser.add_argument(
        "--type",
        default=defaults.type,
        choices=TYPES,
        help="one event type; 'mixed' (random) or 'all' (every type and cause in turn)",
    )
    causes = parser.add_mutually_exclusive_group()
    causes.add_argument(
        "--cause",
        choices=[*KNOWN_CAUSES, "mixed"],
        help="cause of stopped/rejected events, or 'mixed' (default: closed / connection-error)",
    )
    causes.add_argument(
        "--unknown-cause",
        metavar="CAUSE",
        help="a cause Bandwidth does not send (yet), to see how receiver and worker take it",
    )
    parser.add_argument("--count", type=int, default=defaults.count, help="events to send")
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="events a second (0: as fast as possible)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="requests in flight at most"
    )
    parser.add_argument("--user", help="Basic auth as user:password")
    parser.add_argument("--seed", type=int, default=None, help="seed for repeatable ids and mixes")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="per request, s")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _print_report(report: Report) -> None:
    target = f" (target {report.target_rate_per_s:g}/s)" if report.target_rate_per_s else ""
    print(
        f"sent {report.sent} events in {report.elapsed_s:.2f}s: {report.rate_per_s:g}/s{target}, "
        f"concurrency {report.concurrency}"
    )
    print("status: " + ", ".join(f"{s} x{n}" for s, n in report.statuses.items()))
    if report.latency_ms:
        print("latency ms: " + "  ".join(f"{k} {v:g}" for k, v in report.latency_ms.items()))


def _cause_problem(type_: str, cause: str | None) -> str | None:
    """Why `--cause` cannot go with `--type`, or None."""
    if cause is None or cause == "mixed":
        return None
    if type_ == "all":
        return "--type all sends every cause in turn; leave out --cause"
    event_type = TYPE_BY_SHORT_NAME.get(type_)
    if event_type is None:  # mixed: the cause goes on both Stopped and Rejected events
        both = sorted(
            set(CAUSES[TYPE_BY_SHORT_NAME["stopped"]]) & set(CAUSES[TYPE_BY_SHORT_NAME["rejected"]])
        )
        if cause not in both:
            return f"--type mixed takes a cause both Stopped and Rejected have: {', '.join(both)}"
        return None
    allowed = CAUSES.get(event_type)
    if allowed is None:
        return f"--type {type_} events have no cause"
    if cause not in allowed:
        return f"--cause {cause!r} is not a {type_} cause; {type_} takes {', '.join(allowed)}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(names=URL_SETTINGS)
    except ConfigError as exc:
        print(f"rtt send: configuration error: {exc}", file=sys.stderr)
        return 2
    args = _parser(default_url(settings)).parse_args(argv)
    if args.count < 0 or args.concurrency < 1 or args.rate < 0:
        print("rtt send: --count >= 0, --concurrency >= 1 and --rate >= 0", file=sys.stderr)
        return 2
    problem = _cause_problem(args.type, args.cause)
    if problem is None and args.unknown_cause is not None:
        if args.unknown_cause in KNOWN_CAUSES or args.unknown_cause == "mixed":
            problem = f"--unknown-cause {args.unknown_cause!r} is a known cause: use --cause"
        elif args.type in {"started", "available", "all"}:
            problem = "--unknown-cause goes with --type stopped, rejected or mixed"
    if problem:
        print(f"rtt send: {problem}", file=sys.stderr)
        return 2
    options = SendOptions(
        url=args.url,
        type=args.type,
        cause=args.cause or args.unknown_cause,
        count=args.count,
        rate=args.rate,
        concurrency=args.concurrency,
        user=args.user,
        seed=args.seed,
        timeout_s=args.timeout,
        progress=not args.no_progress,
    )
    report = asyncio.run(send_events(options))
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        _print_report(report)
    return 0 if report.all_accepted else 1
