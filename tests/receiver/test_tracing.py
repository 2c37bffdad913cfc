"""The receiver continues the caller's trace and keeps its span's context on the entry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from shared.keys import Keys
from shared.tracing import configure_tracing
from tests.bodies import sample_body
from tests.receiver.helpers import ReceiverFactory

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_tracing("receiver", {}, provider=provider)
    yield exporter
    configure_tracing("receiver", {})


async def test_a_post_continues_the_callers_trace_and_the_entry_carries_its_span(
    exported: InMemorySpanExporter, start_receiver: ReceiverFactory, redis: Redis, prefix: str
) -> None:
    receiver: TestClient[Any, Any] = await start_receiver()
    headers = {**JSON, "traceparent": CALLER}
    resp = await receiver.post(PATH, data=sample_body("started"), headers=headers)
    assert resp.status == 204
    [post] = exported.get_finished_spans()
    assert post.name == f"POST {PATH}"
    assert f"{post.context.trace_id:032x}" == CALLER_TRACE
    assert post.attributes["http.response.status_code"] == 204
    [(_, fields)] = await redis.xrange(Keys(prefix).events())
    version, trace_id, span_id, _ = fields[b"traceparent"].decode().split("-")
    assert (version, trace_id, span_id) == ("00", CALLER_TRACE, f"{post.context.span_id:016x}")


async def test_without_tracing_the_entry_has_no_trace_field(
    receiver: TestClient[Any, Any], redis: Redis, prefix: str
) -> None:
    headers = {**JSON, "traceparent": CALLER}
    assert (await receiver.post(PATH, data=sample_body("started"), headers=headers)).status == 204
    [(_, fields)] = await redis.xrange(Keys(prefix).events())
    assert b"traceparent" not in fields
