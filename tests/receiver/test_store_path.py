"""What a 204 means: stored once, on the right shard, in Redis or in the spool.

Each test runs against one Valkey and against a three-node Valkey Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from receiver.batching import RedisWriter, StoreItem
from receiver.spool import Spool
from receiver.store import Store
from shared.connections import create_redis
from shared.embedded import free_port
from shared.keys import Keys
from shared.settings import load_settings
from tests.bodies import sample_body, sample_event
from tests.cluster import EmbeddedCluster
from tests.helpers import LogLines, eventually
from tests.receiver.helpers import LiveReceiver, live_receiver, metric, post_all

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=["valkey", "cluster"])
def redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    if request.param == "valkey":
        return redis_url
    cluster: EmbeddedCluster = request.getfixturevalue("cluster")
    return cluster.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the kind the receiver uses: a cluster client for the cluster."""
    client = create_redis(load_settings(env={}, overrides={"redis_url": redis_url}))
    yield client
    await client.aclose()


async def test_concurrent_duplicate_deliveries_are_stored_once(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    body = sample_body("stopped", cause="error")
    answers = await asyncio.gather(
        *(receiver.post(PATH, data=body, headers=JSON) for _ in range(25))
    )
    assert [resp.status for resp in answers] == [204] * 25
    [(_, fields)] = await redis.xrange(Keys(prefix).events())
    assert fields[b"body"] == body
    metrics = await (await receiver.get("/metrics")).text()
    assert "rtt_receiver_dedup_hits_total 24.0" in metrics


async def test_a_repeat_is_known_by_type_call_and_transcription(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    ids = {"call_id": "c-dedup", "transcription_id": "t-dedup"}
    first = sample_body("stopped", **ids)
    # A retry may differ byte for byte (another eventTime, other spacing): still the same.
    retry = msgspec.json.encode(sample_event("stopped", **ids, eventTime="2030-01-01T00:00:00Z"))
    other_type = sample_body("available", **ids)
    other_transcription = sample_body("stopped", call_id="c-dedup", transcription_id="t-other")
    for body in (first, retry, other_type, other_transcription):
        assert (await receiver.post(PATH, data=body, headers=JSON)).status == 204
    stored = [fields[b"body"] for _, fields in await redis.xrange(Keys(prefix).events())]
    assert stored == [first, other_type, other_transcription]


async def test_a_repeat_after_the_window_is_stored_again(
    start_receiver: Any, redis: Redis, prefix: str
) -> None:
    client = await start_receiver(dedup_window="200ms")
    body = sample_body("stopped")
    assert (await client.post(PATH, data=body, headers=JSON)).status == 204
    await asyncio.sleep(0.4)
    assert (await client.post(PATH, data=body, headers=JSON)).status == 204
    assert await redis.xlen(Keys(prefix).events()) == 2


async def test_unknown_type_repeated_is_parked_once(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    body = sample_body("stopped", eventType="realTimeTranscriptionPaused")
    for _ in range(3):
        assert (await receiver.post(PATH, data=body, headers=JSON)).status == 204
    assert await redis.xlen(Keys(prefix).unknown) == 1


async def test_shards_spread_calls_and_keep_each_call_in_order(
    start_receiver: Any, redis: Redis, prefix: str
) -> None:
    client = await start_receiver(shards=4)
    keys = Keys(prefix, 4)
    calls = [f"c-shard-{n}" for n in range(24)]
    for call in calls:
        for kind in ("started", "stopped", "available"):
            body = sample_body(kind, call_id=call, transcription_id=f"t-{call}")
            assert (await client.post(PATH, data=body, headers=JSON)).status == 204
    seen: dict[str, list[str]] = {}
    for stream in keys.event_streams():
        for _, fields in await redis.xrange(stream):
            event = msgspec.json.decode(fields[b"body"])
            assert stream == keys.events(keys.shard_of(event["callId"]))
            seen.setdefault(event["callId"], []).append(event["eventType"])
    assert sorted(seen) == sorted(calls)
    assert {tuple(types) for types in seen.values()} == {
        (
            "realTimeTranscriptionStarted",
            "realTimeTranscriptionStopped",
            "realTimeTranscriptionAvailable",
        )
    }
    lengths = [await redis.xlen(stream) for stream in keys.event_streams()]
    assert sum(1 for length in lengths if length) > 1
    assert not await redis.exists(Keys(prefix).events())


async def test_forensic_streams_are_bounded(start_receiver: Any, redis: Redis, prefix: str) -> None:
    client = await start_receiver(forensic_max_len=10)
    for n in range(300):
        assert (await client.post(PATH, data=b'{"n": %d' % n, headers=JSON)).status == 400
    # MAXLEN ~ trims whole nodes of the stream: about the bound, never unbounded.
    assert await redis.xlen(Keys(prefix).rejected) < 300
    [(_, newest)] = await redis.xrevrange(Keys(prefix).rejected, count=1)
    assert newest[b"body"] == b'{"n": 299'
    assert newest[b"peer"] == b"127.0.0.1"


async def test_rejected_body_is_truncated(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    body = b'{"eventType": "' + b"x" * 10_000
    assert (await receiver.post(PATH, data=body, headers=JSON)).status == 400
    [(_, kept)] = await redis.xrange(Keys(prefix).rejected)
    assert kept[b"body"] == body[:4096]
    assert kept[b"error"]


async def test_events_stream_is_never_trimmed_at_xadd(
    start_receiver: Any, redis: Redis, prefix: str
) -> None:
    client = await start_receiver(forensic_max_len=10)
    bodies = [sample_body("started") for _ in range(150)]
    posted = await post_all(str(client.make_url(PATH)), bodies)
    assert posted.count() == {204: 150}
    assert await redis.xlen(Keys(prefix).events()) == 150


async def test_an_event_whose_xadd_fails_is_spooled_and_stored_once_redis_takes_it(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    # XADD fails after the dedup check (the stream key holds a string): the 204 comes from
    # the spool, and no dedup marker may be left to hide the event when the drain retries.
    events = Keys(prefix).events()
    await redis.set(events, "not a stream")
    body = sample_body("stopped", call_id="c-xadd-fails")
    assert (await receiver.post(PATH, data=body, headers=JSON)).status == 204
    await redis.delete(events)
    entries = await eventually(lambda: redis.xrange(events), what="the spooled event drained")
    assert [fields[b"body"] for _, fields in entries] == [body]


async def test_redis_unreachable_goes_to_the_spool(
    make_settings: Any, tmp_path: Path, logs: LogLines
) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", store_timeout="300ms")
    bodies = [sample_body("stopped") for _ in range(10)]
    async with live_receiver(settings) as receiver:
        posted = await post_all(receiver.events_url, bodies, concurrency=1)
        assert posted.count() == {204: 10}
        depth = await metric(receiver.url, "rtt_receiver_spool_depth")
        spooled = await metric(receiver.url, "rtt_receiver_requests_total", outcome="spooled")
        async with (
            aiohttp.ClientSession() as session,
            session.get(receiver.url + "/readyz") as resp,
        ):
            ready = (resp.status, await resp.json())
    assert (depth, spooled) == (10, 10)
    assert ready == (200, {"status": "ready", "store": "spool"})
    # Logged inside the store, during the first request: that request's context is bound.
    [switch] = logs.named("store_spooling")
    assert switch["call_id"] == msgspec.json.decode(bodies[0])["callId"]
    assert switch["request_id"]
    assert sorted(path.name for path in (tmp_path / "spool").iterdir()) == ["p0"]
    assert list((tmp_path / "spool" / "p0").glob("*.seg"))


async def test_redis_and_spool_both_unusable_is_503_with_retry_after(
    make_settings: Any, tmp_path: Path, logs: Any
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("a file where the spool directory should be")
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        store_timeout="300ms",
        spool_dir=str(not_a_directory),
    )
    async with live_receiver(settings) as receiver, aiohttp.ClientSession() as session:
        async with session.post(
            receiver.events_url, data=sample_body("stopped"), headers=JSON
        ) as resp:
            status, retry_after = resp.status, resp.headers.get("Retry-After")
        async with session.get(receiver.url + "/readyz") as resp:
            ready = (resp.status, await resp.json())
    assert (status, retry_after) == (503, "5")
    assert ready[0] == 503
    assert (ready[1]["status"], ready[1]["store"]) == ("unavailable", "unavailable")
    assert "Not a directory" in ready[1]["spool"]
    assert logs.named("event_not_stored")


@pytest.mark.parametrize("kind", ["rejected", "unknown"])
async def test_log_lines_of_a_request_carry_its_request_id(
    receiver: TestClient[Any, Any], logs: Any, kind: str
) -> None:
    body = sample_body("stopped", eventType="somethingNew") if kind == "unknown" else b"{"
    resp = await receiver.post(PATH, data=body, headers=JSON)
    request_id = resp.headers["X-Request-Id"]
    lines = [
        line for line in logs.all() if line["event"] in {"event_type_unknown", "event_rejected"}
    ]
    assert [line["level"] for line in lines] == ["warning"]
    assert lines[0]["request_id"] == request_id


async def test_forensic_markers_are_bounded_with_their_streams(
    start_receiver: Any, redis: Redis, prefix: str
) -> None:
    client = await start_receiver(forensic_max_len=20)
    url = str(client.make_url(PATH))
    bad = [b'{"n": %d' % n for n in range(600)]
    unknown = [sample_body("stopped", eventType="realTimeTranscriptionPaused") for _ in range(600)]
    assert (await post_all(url, bad)).count() == {400: 600}
    assert (await post_all(url, unknown)).count() == {204: 600}
    keys = Keys(prefix)
    found = sorted([key.decode() async for key in redis.scan_iter(f"{prefix}:*", count=1000)])
    print(f"\n1,200 forensic entries left {len(found)} keys")
    # One marker set per forensic stream, holding no more than its stream keeps.
    assert len(found) == 4
    markers = [key for key in found if key not in {keys.rejected, keys.unknown}]
    sizes = {key: await redis.zcard(key) for key in markers}
    assert markers == sorted(
        [keys.forensic_markers(keys.rejected), keys.forensic_markers(keys.unknown)]
    )
    assert set(sizes.values()) == {20}


async def test_a_forensic_entry_written_twice_is_kept_once(redis: Redis, prefix: str) -> None:
    # A drain retry after a lost reply writes the same item again.
    keys = Keys(prefix)
    writer = RedisWriter(redis, dedup_ttl_ms=60_000, timeout_s=2.0, batch_max=16)
    markers = keys.forensic_markers(keys.rejected)
    item = StoreItem(keys.rejected, {"body": b"{"}, markers, max_len=10, marker="r-1")
    first, second = await writer.run([item]), await writer.run([item])
    assert isinstance(first[0], bytes)
    assert second == [None]
    assert await redis.xlen(keys.rejected) == 1


async def test_a_forensic_record_spooled_by_the_previous_version_still_drains(
    redis: Redis, prefix: str, tmp_path: Path
) -> None:
    # Its marker was a key of its own with a TTL; the record is [stream, fields, key, max_len].
    keys = Keys(prefix)
    spool = Spool(tmp_path / "spool")
    await spool.open()
    old_marker = f"{prefix}:dedup:{{{keys.rejected}}}:r-old"
    payload = msgspec.msgpack.encode([keys.rejected, {"body": b"{"}, old_marker, 10])
    await spool.append(payload, 1_700_000_000_000)
    await spool.close()
    store = Store(redis, spool_dir=tmp_path / "spool")
    await store.start()
    try:
        await eventually(
            lambda: not store.spool_depth and store.mode == "redis", 30, "the spool drained"
        )  # the drainer runs in the background
    finally:
        await store.close()
    assert await redis.xlen(keys.rejected) == 1
    assert await redis.exists(old_marker)


async def test_a_receiver_whose_spool_another_process_holds_is_not_ready(
    make_settings: Any, tmp_path: Path, logs: LogLines
) -> None:
    # Two receivers on one RTT_SPOOL_DIR, as a compose file with replicas would start them.
    settings = make_settings(spool_dir=str(tmp_path / "shared-spool"))

    async def readiness(receiver: LiveReceiver) -> tuple[int, dict[str, str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(receiver.url + "/readyz") as resp,
        ):
            return resp.status, await resp.json()

    async with contextlib.AsyncExitStack() as holding:
        first = await holding.enter_async_context(live_receiver(settings))
        async with live_receiver(settings) as second:
            assert await readiness(first) == (200, {"status": "ready", "store": "redis"})
            status, answer = await readiness(second)
            again = await readiness(second)
            # The first one gone, the second takes the spool and is ready.
            await holding.aclose()
            after = await readiness(second)
    assert (status, answer["status"], answer["store"]) == (503, "unavailable", "redis")
    assert "used by another process" in answer["spool"]
    assert again[0] == 503
    assert after == (200, {"status": "ready", "store": "redis"})
    # Said once, not at every probe.
    assert len(logs.named("spool_unusable")) == 1
