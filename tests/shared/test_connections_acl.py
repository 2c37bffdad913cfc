"""A NOPERM from Redis is reported as such, once, with the command and the user.

The worker stops (the grant will not appear by retrying); the receiver keeps every event
in its spool and drains it once the ACL allows. Runs on the session's Valkey, whose ACLs
behave as Redis's do.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import aiohttp
import msgspec
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.connections import PermissionDenied
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import alerts_consumer
from tests.bodies import sample_body
from tests.helpers import LogLines, eventually
from tests.receiver.helpers import live_receiver
from worker.entry import run_worker

pytestmark = pytest.mark.managed_redis
JSON = {"Content-Type": "application/json"}


class User(NamedTuple):
    name: str
    settings: Settings  # the test's settings, connecting as this user


@pytest.fixture
def user_without(
    sync_redis: SyncRedis, redis_url: str, make_settings: Callable[..., Settings], prefix: str
) -> Iterator[Callable[..., User]]:
    """Make an ACL user with every right on the test's keys except the commands named."""
    made: list[str] = []

    def make(*denied: str) -> User:
        name = f"u-{uuid.uuid4().hex[:8]}"
        rules = ["on", ">pw", f"~{prefix}:*", "+@all", *(f"-{command}" for command in denied)]
        sync_redis.execute_command("ACL", "SETUSER", name, *rules)
        made.append(name)
        url = redis_url.replace("redis://", f"redis://{name}:pw@", 1)
        return User(name, make_settings(redis_url=url))

    yield make
    for name in made:
        sync_redis.execute_command("ACL", "DELUSER", name)


@pytest.mark.parametrize("denied", ["xreadgroup", "get"])
async def test_worker_without_a_grant_says_which_command_and_user_once_and_stops(
    redis: Redis, user_without: Callable[..., User], logs: LogLines, denied: str
) -> None:
    """`get`: in the heartbeat's pipeline, the first thing the worker sends."""
    user, settings = user_without(denied)
    async with asyncio.timeout(30):
        with pytest.raises(PermissionDenied) as refused:
            await run_worker(settings, [alerts_consumer(settings)])
    command = denied.upper()
    assert refused.value.command == command
    assert refused.value.user == user
    assert f"Redis user '{user}' may not run {command}" in str(refused.value)
    [line] = logs.named("redis_permission_denied")
    assert line["level"] == "error"
    assert line["command"] == command
    assert line["user"] == user
    # Not the generic "Redis is down, retrying" line.
    assert not [x for x in logs.named("redis_unavailable") if "NOPERM" in str(x)]


@pytest.mark.slow
def test_worker_process_exits_3_with_one_line(
    user_without: Callable[..., User], prefix: str, tmp_path: Path
) -> None:
    import subprocess

    _, settings = user_without("xautoclaim", "xreadgroup")
    env = {
        "RTT_REDIS_URL": str(settings.redis_url),
        "RTT_KEY_PREFIX": prefix,
        "RTT_LOG_FORMAT": "json",
        "RTT_WORKER_METRICS_PORT": "0",
        "RTT_BLOCK": "100ms",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.decode().strip().splitlines()
    assert line.startswith("python -m worker: Redis user ")
    assert "NOPERM" in line
    denials = [
        msgspec.json.decode(raw)
        for raw in done.stdout.splitlines()
        if b"redis_permission_denied" in raw
    ]
    assert len({d["command"] for d in denials}) == len(denials) >= 1
    assert b"Traceback" not in done.stdout + done.stderr


async def test_receiver_spools_while_xadd_is_denied_and_drains_once_granted(
    redis: Redis,
    user_without: Callable[..., User],
    sync_redis: SyncRedis,
    logs: LogLines,
    prefix: str,
) -> None:
    user, settings = user_without("xadd")
    bodies = [
        sample_body("stopped", call_id=f"c-{n}", transcription_id=f"t-{n}") for n in range(20)
    ]
    stream = Keys(prefix).events()
    async with live_receiver(settings) as live, aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(live.events_url, data=body, headers=JSON) as resp:
                assert resp.status == 204
        assert await redis.xlen(stream) == 0
        [line] = logs.named("redis_permission_denied")
        assert line["command"] == "XADD"
        assert line["user"] == user
        sync_redis.execute_command("ACL", "SETUSER", user, "+xadd")
        await eventually(lambda: redis.xlen(stream), what="drained")
        await eventually(
            lambda: asyncio.sleep(0, logs.named("spool_drained")), what="spool drained"
        )
    entries = await redis.xrange(stream)
    stored = [msgspec.json.decode(fields[b"body"])["callId"] for _, fields in entries]
    assert sorted(stored) == sorted(f"c-{n}" for n in range(20))  # each once, none lost
    assert len(logs.named("redis_permission_denied")) == 1
