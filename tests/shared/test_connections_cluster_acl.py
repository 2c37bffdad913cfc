"""A NOPERM on a Redis Cluster is reported as on one node: once, with the command and the
user, also when it comes back inside a cluster pipeline (the receiver's script calls, the
worker's acknowledgements and heartbeats). The worker stops; the receiver spools.

ACLs are per node on a cluster: the tests set the user on every node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from typing import NamedTuple

import aiohttp
import msgspec
import pytest
from redis import Redis as SyncRedis
from redis.exceptions import ResponseError

from shared.connections import PermissionDenied, create_redis, on_permission_denied
from shared.keys import Keys
from shared.settings import Settings
from tests.alerts.helpers import alerts_consumer
from tests.bodies import sample_body
from tests.cluster import EmbeddedCluster
from tests.helpers import LogLines, eventually
from tests.receiver.helpers import live_receiver
from worker.entry import run_worker

pytestmark = [pytest.mark.managed_redis, pytest.mark.slow]
JSON = {"Content-Type": "application/json"}
SHARDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster-acl")) as running:
        yield running


def _on_every_node(cluster: EmbeddedCluster, *args: object) -> None:
    for node in cluster.nodes:
        with SyncRedis(port=node.port, socket_timeout=5) as admin:
            admin.execute_command(*args)


class User(NamedTuple):
    name: str
    settings: Settings  # the test's settings, connecting as this user


@pytest.fixture
def admin_settings(cluster: EmbeddedCluster, make_settings: Callable[..., Settings]) -> Settings:
    """The test's settings as the cluster's default user, who may do anything."""
    return make_settings(redis_url=cluster.url, shards=SHARDS)


@pytest.fixture
def user_without(
    cluster: EmbeddedCluster, make_settings: Callable[..., Settings], prefix: str
) -> Iterator[Callable[..., User]]:
    """An ACL user, on every node, with every right on the test's keys but the commands
    named."""
    made: list[str] = []

    def make(*denied: str) -> User:
        name = f"u-{uuid.uuid4().hex[:8]}"
        rules = ["on", ">pw", f"~{prefix}:*", "+@all", *(f"-{command}" for command in denied)]
        _on_every_node(cluster, "ACL", "SETUSER", name, *rules)
        made.append(name)
        url = cluster.url.replace("redis+cluster://", f"redis+cluster://{name}:pw@", 1)
        return User(name, make_settings(redis_url=url, shards=SHARDS))

    yield make
    for name in made:
        _on_every_node(cluster, "ACL", "DELUSER", name)


async def test_noperm_inside_a_cluster_pipeline_is_reported_once_with_command_and_user(
    user_without: Callable[..., User], prefix: str, logs: LogLines
) -> None:
    user, settings = user_without("xack")
    streams = Keys(prefix, SHARDS).event_streams()
    redis = create_redis(settings)
    heard: list[PermissionDenied] = []
    on_permission_denied(redis, heard.append)
    try:
        for stream in streams:
            await redis.xgroup_create(stream, "g", id="0", mkstream=True)
        for _ in range(3):
            async with redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xack(stream, "g", "0-1")
                with pytest.raises(ResponseError, match="no permissions to run the 'xack'"):
                    await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xack(stream, "g", "0-1")
            replies = await pipe.execute(raise_on_error=False)
        assert all(isinstance(reply, ResponseError) for reply in replies)
    finally:
        await redis.aclose()
    [line] = logs.named("redis_permission_denied")
    assert (line["command"], line["user"], line["level"]) == ("XACK", user, "error")
    assert [(d.command, d.user) for d in heard] == [("XACK", user)]


async def _post(settings: Settings, bodies: list[bytes]) -> None:
    async with live_receiver(settings) as live, aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(live.events_url, data=body, headers=JSON) as resp:
                assert resp.status == 204


@pytest.mark.parametrize("denied", ["xack", "xreadgroup", "get", "cluster|slots"])
async def test_worker_on_a_cluster_without_a_grant_says_which_command_and_user_once_and_stops(
    user_without: Callable[..., User], admin_settings: Settings, logs: LogLines, denied: str
) -> None:
    """`get`: the heartbeat's pipeline, the first thing the worker sends; `cluster|slots`:
    what the client asks first (redis-py words that refusal "cluster mode is not enabled")."""
    await _post(
        admin_settings,
        [sample_body("stopped", call_id=f"c-{n}", transcription_id=f"t-{n}") for n in range(9)],
    )
    user, settings = user_without(denied)
    async with asyncio.timeout(60):
        with pytest.raises(PermissionDenied) as refused:
            await run_worker(settings, [alerts_consumer(settings)])
    assert (refused.value.command, refused.value.user) == (denied.upper(), user)
    lines = logs.named("redis_permission_denied")
    assert [(x["command"], x["user"]) for x in lines] == [(denied.upper(), user)]
    assert not [x for x in logs.named("redis_unavailable") if "NOPERM" in str(x)]
    assert not logs.named("worker_failed")


async def test_receiver_on_a_cluster_spools_while_the_script_is_denied_and_drains_once_granted(
    cluster: EmbeddedCluster,
    user_without: Callable[..., User],
    admin_settings: Settings,
    prefix: str,
    logs: LogLines,
) -> None:
    user, settings = user_without("xadd")
    calls = [f"c-{n}" for n in range(30)]
    bodies = [sample_body("stopped", call_id=c, transcription_id=f"t-{c}") for c in calls]
    keys = Keys(prefix, SHARDS)
    admin = create_redis(admin_settings)

    async def stored() -> int:
        return sum([await admin.xlen(stream) for stream in keys.event_streams()])

    async with AsyncExitStack() as stack:
        stack.push_async_callback(admin.aclose)
        live = await stack.enter_async_context(live_receiver(settings))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for body in bodies:
            async with http.post(live.events_url, data=body, headers=JSON) as resp:
                assert resp.status == 204
        assert await stored() == 0
        [line] = logs.named("redis_permission_denied")
        assert (line["command"], line["user"]) == ("XADD", user)
        _on_every_node(cluster, "ACL", "SETUSER", user, "+xadd")
        await eventually(lambda: logs.named("spool_drained"), what="drained")
        found: list[str] = []
        for stream in keys.event_streams():
            for _, fields in await admin.xrange(stream):
                found.append(msgspec.json.decode(fields[b"body"])["callId"])
    assert sorted(found) == sorted(calls)  # each once, none lost
    assert len(logs.named("redis_permission_denied")) == 1
