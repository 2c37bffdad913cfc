"""What operators read: /metrics in Prometheus format, and the log lines of a request."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import msgspec
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from shared.keys import Keys
from shared.logs import configure_logging
from tests.bodies import sample_body
from tests.helpers import LogLines

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_count_requests_by_outcome_and_type(start_receiver: Any) -> None:
    client = await start_receiver(basic_auth="bw:pw")
    auth = {**JSON, "Authorization": encode_basic_auth("bw", "pw")}
    stopped = sample_body("stopped")
    for body in (stopped, stopped, sample_body("started")):
        assert (await client.post(PATH, data=body, headers=auth)).status == 204
    assert (await client.post(PATH, data=b"{", headers=auth)).status == 400
    unknown = sample_body("stopped", eventType="brandNew")
    assert (await client.post(PATH, data=unknown, headers=auth)).status == 204
    assert (await client.post(PATH, data=stopped, headers=JSON)).status == 401
    assert (
        await client.post(PATH, data=stopped, headers={"Content-Type": "text/plain"})
    ).status == 401

    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    requests = "rtt_receiver_requests_total"
    assert (
        _sample(text, f'{requests}{{event_type="realTimeTranscriptionStopped",outcome="stored"}}')
        == 1
    )
    assert (
        _sample(
            text, f'{requests}{{event_type="realTimeTranscriptionStopped",outcome="duplicate"}}'
        )
        == 1
    )
    assert (
        _sample(text, f'{requests}{{event_type="realTimeTranscriptionStarted",outcome="stored"}}')
        == 1
    )
    assert _sample(text, f'{requests}{{event_type="unknown",outcome="stored"}}') == 1
    assert _sample(text, f'{requests}{{event_type="",outcome="invalid"}}') == 1
    assert _sample(text, f'{requests}{{event_type="",outcome="unauthorized"}}') == 2
    assert _sample(text, "rtt_receiver_decode_errors_total") == 1
    assert _sample(text, "rtt_receiver_dedup_hits_total") == 1
    # Every stored, repeated or parked event was timed; the forensic 400 is not a request outcome.
    assert _sample(text, 'rtt_receiver_store_seconds_count{outcome="stored"}') == 3
    assert _sample(text, "rtt_receiver_spool_depth") == 0
    assert _sample(text, "rtt_receiver_spool_oldest_age_seconds") == 0


async def test_accepted_event_logs_nothing_at_info(
    receiver: TestClient[Any, Any], logs: LogLines
) -> None:
    resp = await receiver.post(PATH, data=sample_body("stopped"), headers=JSON)
    assert resp.status == 204
    assert logs.all() == []


async def test_unknown_cause_is_stored_and_logged_as_a_warning(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str, logs: LogLines
) -> None:
    body = sample_body("rejected", cause="quota-exceeded", call_id="c-new-cause")
    resp = await receiver.post(PATH, data=body, headers=JSON)
    assert resp.status == 204
    [entry] = await redis.xrange(Keys(prefix).events())
    assert entry[1][b"body"] == body
    [line] = logs.named("event_cause_unknown")
    assert line["level"] == "warning"
    assert line["cause"] == "quota-exceeded"
    assert line["event_type"] == "realTimeTranscriptionRejected"
    assert line["call_id"] == "c-new-cause"
    known = sample_body("rejected", cause="track-limit")
    assert (await receiver.post(PATH, data=known, headers=JSON)).status == 204
    assert len(logs.named("event_cause_unknown")) == 1


async def test_accepted_event_logs_at_debug_with_numbers_masked(
    start_receiver: Any, logs: LogLines
) -> None:
    receiver = await start_receiver(log_level="debug")
    resp = await receiver.post(PATH, data=sample_body("stopped", call_id="c-log"), headers=JSON)
    assert resp.status == 204
    lines = logs.all()
    assert {line["level"] for line in lines} == {"debug"}
    [accepted] = logs.named("event_accepted")
    assert accepted["request_id"] == resp.headers["X-Request-Id"]
    assert accepted["call_id"] == "c-log"
    assert accepted["from"] == "+1********22"
    assert accepted["to"] == "+1********44"
    assert "5551112222" not in str(lines)


async def test_phone_numbers_unmasked_when_configured(start_receiver: Any) -> None:
    receiver = await start_receiver(log_level="debug", log_phone_numbers=True)
    buffer = io.BytesIO()
    configure_logging(
        component="receiver",
        level="debug",
        fmt="json",
        stream=buffer,
        phone_numbers=True,
        cache=False,
    )
    assert (await receiver.post(PATH, data=sample_body("stopped"), headers=JSON)).status == 204
    [accepted] = [
        line
        for line in map(msgspec.json.decode, buffer.getvalue().splitlines())
        if line["event"] == "event_accepted"
    ]
    assert (accepted["from"], accepted["to"]) == ("+15551112222", "+15553334444")


async def test_client_request_id_is_kept_and_bound(
    receiver: TestClient[Any, Any], logs: LogLines
) -> None:
    headers = {**JSON, "X-Request-Id": "bw-abc-123"}
    resp = await receiver.post(PATH, data=b'{"eventType": 1}', headers=headers)
    assert resp.status == 400
    assert resp.headers["X-Request-Id"] == "bw-abc-123"
    [rejected] = logs.named("event_rejected")
    assert rejected["request_id"] == "bw-abc-123"
    assert rejected["level"] == "warning"
    assert rejected["path"] == "$.eventType"
    assert rejected["peer"] == "127.0.0.1"


async def test_store_timings_of_many_events_are_all_in_the_histogram(
    receiver: TestClient[Any, Any],
) -> None:
    # Concurrent events are timed in bulk before the scrape: each one in exactly one bucket.
    bodies = [sample_body("stopped", call_id=f"c-histogram-{n}") for n in range(40)]
    answers = await asyncio.gather(*(receiver.post(PATH, data=b, headers=JSON) for b in bodies))
    assert [answer.status for answer in answers] == [204] * len(bodies)
    text = await (await receiver.get("/metrics")).text()
    histogram = "rtt_receiver_store_seconds"
    assert _sample(text, f'{histogram}_count{{outcome="stored"}}') == len(bodies)
    assert _sample(text, f'{histogram}_bucket{{le="+Inf",outcome="stored"}}') == len(bodies)
    buckets = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(f"{histogram}_bucket{{") and 'outcome="stored"' in line
    ]
    assert buckets == sorted(buckets)
    assert 0 < _sample(text, f'{histogram}_sum{{outcome="stored"}}') < 2 * len(bodies)
    requests = 'rtt_receiver_requests_total{event_type="realTimeTranscriptionStopped",'
    assert _sample(text, requests + 'outcome="stored"}') == len(bodies)
