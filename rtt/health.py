"""`rtt health`: a container health check that fits the role the container runs.

A receiver is healthy when its `/readyz` answers 200: it can take events (Redis answers,
or its spool does). A worker serves nothing a probe could poll on a fixed port, so it is
healthy when a process of this host holds a live heartbeat in Redis: its event loop runs
and it reaches Redis. Without a role, the role is that of the container's main process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from shared.keys import Keys
from shared.settings import REDIS_SETTINGS, ConfigError, Settings, load_settings

__all__ = ["main"]

ROLES = ("receiver", "worker", "serve")
# Every worker runs the built-in alerts consumer, so it always beats for this group.
_ALWAYS_SERVED_GROUP = "alerts"
_WILDCARDS = {"", "0.0.0.0", "::"}
# What each check reads: a setting the check does not use cannot fail it.
_READS = {
    "receiver": ("host", "port"),
    "worker": (*REDIS_SETTINGS, "key_prefix", "shards", "worker_id", "redis_timeout", "block"),
}


class Unhealthy(Exception):
    """The check ran and found the process not serving; the message says what failed."""


def main_process_role(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """The `rtt` command PID 1 runs (`rtt worker` -> worker), None if it is none of them."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in args:
        if arg.decode(errors="replace") in ROLES:
            return arg.decode()
    return None


def check_receiver(settings: Settings, timeout_s: float) -> str:
    host = settings.host
    if host in _WILDCARDS:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return f"receiver ready: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"receiver not ready: {url} answered {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unhealthy(f"receiver not reachable at {url}: {reason}") from None


def _candidate_worker_ids(settings: Settings) -> list[str]:
    """RTT_WORKER_ID, or the default id (host-pid) of every other process of this host."""
    if settings.worker_id:
        return [settings.worker_id]
    host = socket.gethostname()
    own = os.getpid()
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [f"{host}-{pid}" for pid in pids if pid != own]


async def _heartbeats(settings: Settings, worker_ids: list[str], timeout_s: float) -> list[str]:
    from shared.connections import create_redis

    keys = Keys(settings.key_prefix, settings.shards)
    redis = create_redis(settings)
    try:
        async with asyncio.timeout(timeout_s), redis.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.get(keys.heartbeat(_ALWAYS_SERVED_GROUP, wid))
            values = await pipe.execute()
    finally:
        await redis.aclose()
    # The value names the process that holds the id: host:pid:nonce.
    prefix = socket.gethostname().encode() + b":"
    return [
        wid
        for wid, value in zip(worker_ids, values, strict=True)
        if value and value.startswith(prefix)
    ]


def check_worker(settings: Settings, timeout_s: float) -> str:
    if not settings.redis_url:
        raise Unhealthy("worker health needs RTT_REDIS_URL")
    worker_ids = _candidate_worker_ids(settings)
    try:
        alive = asyncio.run(_heartbeats(settings, worker_ids, timeout_s))
    except TimeoutError:
        raise Unhealthy(f"Redis did not answer within {timeout_s}s") from None
    except Exception as exc:
        raise Unhealthy(f"Redis unreachable: {exc}") from None
    if not alive:
        raise Unhealthy(f"no worker of host {socket.gethostname()} holds a live heartbeat")
    return f"worker alive: {', '.join(alive)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rtt health",
        description="Exit 0 if the receiver or worker of this container serves, 1 if not.",
    )
    parser.add_argument(
        "role", nargs="?", choices=ROLES, help="default: the role of the container's PID 1"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds; default 3")
    args = parser.parse_args(argv)
    role = args.role or main_process_role()
    if role is None:
        print("rtt health: cannot tell the role; name it: receiver or worker", file=sys.stderr)
        return 2
    try:
        settings = load_settings(names=_READS["worker" if role == "worker" else "receiver"])
    except ConfigError as exc:
        print(f"rtt health: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        message = (
            check_worker(settings, args.timeout)
            if role == "worker"
            else check_receiver(settings, args.timeout)
        )
    except Unhealthy as exc:
        print(f"rtt health: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0
