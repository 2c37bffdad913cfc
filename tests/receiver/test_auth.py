"""Who may post: Basic credentials with Bandwidth's challenge flow, and source networks."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import encode_basic_auth
from redis.asyncio import Redis

from shared.keys import Keys
from tests.bodies import sample_body
from tests.helpers import LogLines

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}
CHALLENGE = 'Basic realm="rtt-events", charset="UTF-8"'


def _as(user: str, password: str) -> dict[str, str]:
    return {**JSON, "Authorization": encode_basic_auth(user, password)}


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


async def test_challenge_then_credentials_is_stored_once(
    start_receiver: Any, redis: Redis, prefix: str, logs: LogLines
) -> None:
    client = await start_receiver(basic_auth="bandwidth:s3cret-Pa55")
    body = sample_body("stopped")
    first = await client.post(PATH, data=body, headers=JSON)
    assert first.status == 401
    assert first.headers["WWW-Authenticate"] == CHALLENGE
    assert await redis.xlen(Keys(prefix).events()) == 0
    second = await client.post(PATH, data=body, headers=_as("bandwidth", "s3cret-Pa55"))
    assert second.status == 204
    assert await redis.xlen(Keys(prefix).events()) == 1
    # The unauthenticated first try is the normal flow: not worth a warning.
    assert [line["level"] for line in logs.named("request_unauthorized")] == ["debug"]


@pytest.mark.parametrize(
    "authorization",
    [
        _basic(b"bandwidth:wrong"),
        _basic(b"other:s3cret-Pa55"),
        _basic(b"bandwidth:s3cret-Pa55x"),
        _basic(b"bandwidth:"),
        _basic(b":s3cret-Pa55"),
        _basic(b"bandwidths3cret-Pa55"),
        _basic(b"bandwidth:s3cret-Pa55")[:-2],
        "Basic !!not-base64!!",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(b"bandwidth:s3cret-Pa55").decode(),
        "Digest username=bandwidth",
        "bandwidth:s3cret-Pa55",
        "Basic \u00e9t\u00e9",
        "",
    ],
)
async def test_wrong_or_malformed_credentials_get_the_challenge(
    start_receiver: Any, redis: Redis, prefix: str, logs: LogLines, authorization: str
) -> None:
    client = await start_receiver(basic_auth="bandwidth:s3cret-Pa55")
    headers = {**JSON, "Authorization": authorization}
    resp = await client.post(PATH, data=sample_body("stopped"), headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == CHALLENGE
    assert await redis.xlen(Keys(prefix).events()) == 0
    [line] = logs.named("request_unauthorized")
    assert line["reason"] in {"malformed", "wrong", "missing"}
    assert "s3cret" not in str(logs.all())


async def test_scheme_is_case_insensitive(start_receiver: Any, redis: Redis, prefix: str) -> None:
    client = await start_receiver(basic_auth="bandwidth:s3cret-Pa55")
    token = base64.b64encode(b"bandwidth:s3cret-Pa55").decode()
    headers = {**JSON, "Authorization": f"basic {token}"}
    assert (await client.post(PATH, data=sample_body("stopped"), headers=headers)).status == 204


async def test_password_may_hold_colons_and_non_ascii(start_receiver: Any) -> None:
    client = await start_receiver(basic_auth="bw:pa:ss:w\u00f6rd")
    headers = {**JSON, "Authorization": _basic("bw:pa:ss:w\u00f6rd".encode())}
    assert (await client.post(PATH, data=sample_body("stopped"), headers=headers)).status == 204


async def test_rotation_accepts_old_and_new_until_the_old_is_removed(
    start_receiver: Any, redis: Redis, prefix: str
) -> None:
    old, new = _as("bandwidth", "old-secret"), _as("bandwidth", "new-secret")
    during = await start_receiver(basic_auth="bandwidth:old-secret,bandwidth:new-secret")
    for headers in (old, new):
        resp = await during.post(PATH, data=sample_body("stopped"), headers=headers)
        assert resp.status == 204
    after = await start_receiver(basic_auth="bandwidth:new-secret")
    resp = await after.post(PATH, data=sample_body("stopped"), headers=old)
    assert resp.status == 401
    resp = await after.post(PATH, data=sample_body("stopped"), headers=new)
    assert resp.status == 204
    assert await redis.xlen(Keys(prefix).events()) == 3


async def test_health_and_metrics_need_no_credentials(start_receiver: Any) -> None:
    client = await start_receiver(basic_auth="bandwidth:s3cret-Pa55")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200


async def test_source_outside_the_allowed_networks_is_403(
    start_receiver: Any, redis: Redis, prefix: str, logs: LogLines
) -> None:
    client = await start_receiver(allow_cidrs="10.0.0.0/8,192.0.2.0/24")
    resp = await client.post(PATH, data=sample_body("stopped"), headers=JSON)
    assert resp.status == 403
    assert await redis.xlen(Keys(prefix).events()) == 0
    assert logs.named("request_forbidden")[0]["peer"] == "127.0.0.1"
    # X-Forwarded-For from a peer that is not a trusted proxy is not believed.
    forwarded = {**JSON, "X-Forwarded-For": "10.1.2.3"}
    assert (await client.post(PATH, data=sample_body("stopped"), headers=forwarded)).status == 403


@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        ("10.1.2.3", 204),
        ("10.1.2.3, 127.0.0.1", 204),  # through a second proxy of ours
        ("198.51.100.7", 403),
        ("10.1.2.3, 198.51.100.7", 403),  # the client wrote 10.1.2.3 itself
        ("not-an-address", 403),
    ],
)
async def test_trusted_proxy_names_the_client(
    start_receiver: Any, forwarded_for: str, status: int
) -> None:
    client = await start_receiver(allow_cidrs="10.0.0.0/8", trusted_proxies="127.0.0.0/8")
    headers = {**JSON, "X-Forwarded-For": forwarded_for}
    assert (await client.post(PATH, data=sample_body("stopped"), headers=headers)).status == status


async def test_allowed_source_still_needs_credentials(start_receiver: Any) -> None:
    client = await start_receiver(allow_cidrs="127.0.0.1", basic_auth="bandwidth:s3cret-Pa55")
    resp = await client.post(PATH, data=sample_body("stopped"), headers=JSON)
    assert resp.status == 401
    headers = _as("bandwidth", "s3cret-Pa55")
    resp = await client.post(PATH, data=sample_body("stopped"), headers=headers)
    assert resp.status == 204


@pytest.mark.parametrize(
    "header",
    [
        "basic " + base64.b64encode(b"bandwidth:s3cret-Pa55").decode(),
        "  Basic   " + base64.b64encode(b"bandwidth:s3cret-Pa55").decode() + " ",
    ],
)
async def test_other_spellings_of_the_right_credentials_are_accepted(
    start_receiver: Any, header: str
) -> None:
    # The usual header is matched as a whole; any other spelling is decoded and compared.
    client = await start_receiver(basic_auth="bandwidth:s3cret-Pa55")
    resp = await client.post(
        PATH, data=sample_body("stopped"), headers={**JSON, "Authorization": header}
    )
    assert resp.status == 204
