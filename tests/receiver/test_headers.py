"""Header bytes a client may send: none of them stalls a request, or anyone else's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from shared.embedded import free_port
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_body
from tests.helpers import LogLines
from tests.receiver.helpers import live_receiver, metric, post_all, raw_post, stream_call_ids

JSON = (b"Content-Type", b"application/json")
_VISIBLE_ASCII = re.compile(rb"^[\x21-\x7e]{1,128}$")


def _call_id(body: bytes) -> str:
    call_id: str = msgspec.json.decode(body)["callId"]
    return call_id


async def test_request_id_outside_utf8_is_answered_and_so_is_everyone_sharing_its_flush(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    good = [sample_body("stopped") for _ in range(150)]
    bad = [sample_body("stopped") for _ in range(10)]
    async with live_receiver(make_settings()) as receiver:
        posting = asyncio.create_task(post_all(receiver.events_url, good, concurrency=16))
        headers = [[JSON, (b"X-Request-Id", b"bw-\xff\xfe-%d" % n)] for n in range(len(bad))]
        answers = await asyncio.gather(
            *(raw_post(receiver.events_url, body, h) for body, h in zip(bad, headers, strict=True))
        )
        posted = await posting
    stored = await stream_call_ids(redis, Keys(prefix))
    sent = {_call_id(body) for body in good + bad}
    unanswered = sorted(_call_id(body) for body in good if posted.statuses.get(body) != 204)
    print(f"\nsent {len(sent)}, stored {len(stored)}, not answered 204: {unanswered}")
    print(f"missing from the stream: {sorted(sent - set(stored))}")
    assert [answer.status for answer in answers] == [204] * len(bad)
    assert posted.count() == {204: len(good)}
    assert set(stored) == sent
    assert set(stored.values()) == {1}
    # The id the client could not have read back is replaced by one it can.
    by_call = {
        _call_id(fields[b"body"]): fields[b"request_id"]
        for _, fields in await redis.xrange(Keys(prefix).events())
    }
    for body, answer in zip(bad, answers, strict=True):
        assert _VISIBLE_ASCII.match(answer.headers[b"x-request-id"])
        assert by_call[_call_id(body)] == answer.headers[b"x-request-id"]


async def test_request_id_outside_utf8_is_spooled_while_redis_is_down(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", store_timeout="300ms")
    async with live_receiver(settings) as receiver:
        answer = await raw_post(
            receiver.events_url, sample_body("stopped"), [JSON, (b"X-Request-Id", b"\xff")]
        )
        spooled = await metric(receiver.url, "rtt_receiver_requests_total", outcome="spooled")
    assert (answer.status, spooled) == (204, 1)


async def test_request_id_outside_utf8_on_a_bad_body_is_a_400_naming_the_fault(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str, logs: LogLines
) -> None:
    async with live_receiver(make_settings()) as receiver:
        answer = await raw_post(receiver.events_url, b"{", [JSON, (b"X-Request-Id", b"r-\xff")])
    assert answer.status == 400
    fault = msgspec.json.decode(answer.body)
    assert fault["path"] == "$"
    assert fault["error"]
    [(_, kept)] = await redis.xrange(Keys(prefix).rejected)
    assert kept[b"request_id"] == answer.headers[b"x-request-id"]
    [line] = logs.named("event_rejected")
    assert line["request_id"] == answer.headers[b"x-request-id"].decode()


async def test_request_id_of_visible_ascii_is_kept(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    request_id = b"bw-" + bytes(range(0x21, 0x7F))[:100]
    async with live_receiver(make_settings()) as receiver:
        answer = await raw_post(
            receiver.events_url, sample_body("started"), [JSON, (b"X-Request-Id", request_id)]
        )
    assert answer.status == 204
    assert answer.headers[b"x-request-id"] == request_id
    [(_, entry)] = await redis.xrange(Keys(prefix).events())
    assert entry[b"request_id"] == request_id


async def test_content_type_outside_utf8_is_a_415_naming_it(
    make_settings: Callable[..., Settings],
) -> None:
    async with live_receiver(make_settings()) as receiver:
        answer = await raw_post(
            receiver.events_url, sample_body("started"), [(b"Content-Type", b"text/\xff")]
        )
    assert answer.status == 415
    assert "text/" in msgspec.json.decode(answer.body)["error"]


async def test_content_type_parameters_aiohttp_cannot_parse_are_not_a_500(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    # aiohttp's parse_content_type raises IndexError on a parameter name ending in `*`.
    async with live_receiver(make_settings()) as receiver:
        json_answer = await raw_post(
            receiver.events_url,
            sample_body("started"),
            [(b"Content-Type", b"application/json; charset*")],
        )
        other_answer = await raw_post(
            receiver.events_url, sample_body("started"), [(b"Content-Type", b"text/\xff; a*")]
        )
    assert (json_answer.status, other_answer.status) == (204, 415)
    assert await redis.xlen(Keys(prefix).events()) == 1
