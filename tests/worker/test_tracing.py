"""One trace from POST to every consumer: each handler call is a child of the POST span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from receiver.app import create_app
from shared.events import Event
from shared.settings import Settings
from shared.tracing import configure_tracing
from tests.bodies import sample_body
from tests.helpers import eventually
from tests.worker.helpers import running
from worker.consumers import Context, consumer

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_tracing("test", {}, provider=provider)
    yield exporter
    configure_tracing("test", {})


async def test_post_then_a_failed_and_a_retried_handler_call_make_one_trace(
    exported: InMemorySpanExporter, settings: Settings, redis: Redis
) -> None:
    calls: list[int] = []

    @consumer("flaky")
    async def flaky(event: Event, ctx: Context) -> None:
        calls.append(ctx.deliveries)
        if ctx.deliveries == 1:
            raise RuntimeError("first delivery fails")

    client = TestClient(TestServer(create_app(settings, redis)))
    await client.start_server()
    try:
        headers = {
            "Content-Type": "application/json",
            "traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01",
        }
        resp = await client.post(settings.path, data=sample_body("started"), headers=headers)
        assert resp.status == 204
    finally:
        await client.close()
    async with running(settings, redis, [flaky]):
        await eventually(lambda: _async(calls == [1, 2]), what="a failure, then a retry")
    spans = exported.get_finished_spans()
    [post] = [span for span in spans if span.name.startswith("POST ")]
    handled = [span for span in spans if span.name == "flaky process"]
    assert [span.attributes["rtt.deliveries"] for span in handled] == [1, 2]
    assert [span.attributes["rtt.outcome"] for span in handled] == ["failed", "handled"]
    for span in (post, *handled):
        assert f"{span.context.trace_id:032x}" == CALLER_TRACE
    assert {span.parent.span_id for span in handled} == {post.context.span_id}
    assert {span.attributes["messaging.consumer.group.name"] for span in handled} == {"flaky"}


async def _async(value: bool) -> bool:
    return value
