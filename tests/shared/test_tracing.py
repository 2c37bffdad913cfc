"""Tracing: one trace from the caller's POST to each consumer's handler call."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from shared.tracing import Tracer, configure_tracing

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def traced() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    """Tracing on, exporting to memory: the SDK's own test exporter."""
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield configure_tracing("test", {}, provider=provider), exporter
    configure_tracing("test", {})


def test_off_unless_the_otel_variables_ask() -> None:
    assert not configure_tracing("test", {}).enabled
    assert not configure_tracing("test", {"OTEL_SERVICE_NAME": "x"}).enabled
    assert not configure_tracing(
        "test", {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}
    ).enabled
    on = configure_tracing("test", {"OTEL_TRACES_EXPORTER": "none"})
    assert on.enabled
    on.shutdown()
    configure_tracing("test", {})


def test_off_is_a_no_op() -> None:
    off = Tracer()
    with off.receive({"traceparent": CALLER}, "/p") as (span, traceparent):
        span.set_attribute("a", 1)
    assert traceparent == ""
    with off.handle("", consumer="c", stream="s", entry_id="1-0", deliveries=1) as span:
        span.set_attribute("a", 1)


def test_the_worker_span_is_a_child_of_the_receiver_span_in_the_callers_trace(
    traced: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exported = traced
    with tracer.receive({"traceparent": CALLER}, "/realTimeTranscriptionEvents") as (_, carried):
        pass
    with tracer.handle(
        carried, consumer="alerts", stream="rtt:events", entry_id="1-0", deliveries=2
    ):
        pass
    post, handled = exported.get_finished_spans()
    assert post.name == "POST /realTimeTranscriptionEvents"
    assert f"{post.context.trace_id:032x}" == CALLER.split("-")[1]
    assert f"{post.parent.span_id:016x}" == CALLER.split("-")[2]
    assert carried.split("-")[2] == f"{post.context.span_id:016x}"
    assert handled.name == "alerts process"
    assert handled.context.trace_id == post.context.trace_id
    assert handled.parent.span_id == post.context.span_id
    assert handled.attributes["messaging.message.id"] == "1-0"
    assert handled.attributes["rtt.deliveries"] == 2


def test_without_a_caller_trace_the_receiver_starts_one(
    traced: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exported = traced
    with tracer.receive({}, "/p") as (_, carried):
        pass
    [post] = exported.get_finished_spans()
    assert post.parent is None
    assert carried.split("-")[1] == f"{post.context.trace_id:032x}"


def test_the_off_path_never_imports_opentelemetry() -> None:
    import subprocess

    code = (
        "import sys; from shared.tracing import configure_tracing; "
        "t = configure_tracing('x', {}); "
        "t.receive({}, '/p'); "
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
