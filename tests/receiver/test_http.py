"""The HTTP contract of DESIGN.md, against a live receiver and a real Valkey."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from shared.keys import Keys
from tests.bodies import BROKE_THE_DECODER, SEED_EXAMPLES, sample_body

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}


def _without(field: str) -> bytes:
    event = msgspec.json.decode(sample_body("stopped"))
    del event[field]
    return msgspec.json.encode(event)


async def _entries(redis: Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await redis.xrange(stream)]


@pytest.mark.parametrize("body", SEED_EXAMPLES, ids=["enqueued", "destination"])
async def test_seed_example_is_stored_byte_for_byte(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str, body: bytes
) -> None:
    resp = await receiver.post(PATH, data=body, headers=JSON)
    assert resp.status == 204
    [entry] = await _entries(redis, Keys(prefix).events())
    # The entry layout of DESIGN.md, in its order, whichever script wrote it.
    assert list(entry) == [b"type", b"body", b"received_at", b"request_id"]
    assert entry[b"body"] == body
    assert entry[b"type"] == b"realTimeTranscriptionStopped"
    assert int(entry[b"received_at"]) > 1_600_000_000_000
    assert entry[b"request_id"] == resp.headers["X-Request-Id"].encode()


async def test_json_with_charset_is_json(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    resp = await receiver.post(PATH, data=sample_body("started"), headers=headers)
    assert resp.status == 204
    assert await redis.xlen(Keys(prefix).events()) == 1


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"", "$"),
        (b'{"eventType": "realTimeTranscriptionStopped", "callId', "$"),
        (b"\xff\xfe\x00{", "$"),
        (b"[]", "$"),
        (b"42", "$"),
        (b'{"eventType": "realTimeTranscriptionStarted"}', "$.accountId"),
        (sample_body("stopped", callId=17), "$.callId"),
        (_without("cause"), "$.cause"),
        (sample_body("started", realTimeTranscription={"name": "n"}), "$.realTimeTranscription.id"),
    ],
)
async def test_malformed_body_is_400_naming_the_fault_and_kept(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str, body: bytes, path: str
) -> None:
    resp = await receiver.post(PATH, data=body, headers=JSON)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["path"] == path
    assert answer["error"]
    keys = Keys(prefix)
    assert await redis.xlen(keys.events()) == 0
    [kept] = await _entries(redis, keys.rejected)
    assert kept[b"body"] == body
    assert kept[b"path"] == path.encode()


@pytest.mark.parametrize(
    ("body", "path"),
    [(body, path) for body, path, _ in BROKE_THE_DECODER.values()],
    ids=BROKE_THE_DECODER.keys(),
)
async def test_bodies_that_were_answered_500_are_400_naming_the_fault_and_kept(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str, body: bytes, path: str
) -> None:
    resp = await receiver.post(PATH, data=body, headers=JSON)
    assert resp.status == 400
    answer = await resp.json()
    assert (answer["path"], bool(answer["error"])) == (path, True)
    [kept] = await _entries(redis, Keys(prefix).rejected)
    assert kept[b"body"] == body[:4096]
    assert kept[b"error"] == answer["error"].encode()


async def test_unknown_event_type_is_accepted_and_parked(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    body = sample_body("stopped", eventType="realTimeTranscriptionPaused")
    resp = await receiver.post(PATH, data=body, headers=JSON)
    assert resp.status == 204
    keys = Keys(prefix)
    assert await redis.xlen(keys.events()) == 0
    [parked] = await _entries(redis, keys.unknown)
    assert parked[b"body"] == body


async def test_body_over_limit_is_413(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    event = msgspec.json.decode(sample_body("stopped"))
    event["padding"] = "x" * (64 * 1024)
    resp = await receiver.post(PATH, data=msgspec.json.encode(event), headers=JSON)
    assert resp.status == 413
    assert await redis.xlen(Keys(prefix).events()) == 0


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_content_type_is_415(
    receiver: TestClient[Any, Any], ctype: str | None
) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    resp = await receiver.post(PATH, data=sample_body("stopped"), headers=headers)
    assert resp.status == 415


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405(receiver: TestClient[Any, Any], method: str) -> None:
    resp = await receiver.request(method, PATH)
    assert resp.status == 405


async def test_configured_path(start_receiver: Any, redis: Redis, prefix: str) -> None:
    client = await start_receiver(path="/hooks/bw")
    assert (await client.post("/hooks/bw", data=sample_body("started"), headers=JSON)).status == 204
    assert (await client.post(PATH, data=sample_body("started"), headers=JSON)).status == 404
    assert await redis.xlen(Keys(prefix).events()) == 1


async def test_health_and_readiness(receiver: TestClient[Any, Any]) -> None:
    assert (await receiver.get("/healthz")).status == 200
    resp = await receiver.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["store"] == "redis"


async def test_a_client_expecting_100_continue_is_answered_and_stored(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    # curl sends `Expect: 100-continue` with bodies over 1 KiB: the events path must answer it.
    body = sample_body("stopped")
    resp = await receiver.post(PATH, data=body, headers=JSON, expect100=True)
    assert resp.status == 204
    [entry] = await _entries(redis, Keys(prefix).events())
    assert entry[b"body"] == body
