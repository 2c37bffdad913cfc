"""OpenTelemetry tracing, optional (`pip install 'rtt-events[otel]'`) and off by default.

One trace follows an event: the receiver continues the caller's W3C `traceparent` (or
starts a trace) in a span around the POST, keeps that span's context on the stream entry
(field `traceparent`), and the worker runs each handler call in a child span of it. So a
trace shows POST, then every consumer that handled the event, however much later.

Configured the OpenTelemetry way, by the standard `OTEL_*` variables: tracing is on when
the SDK is installed and `OTEL_TRACES_EXPORTER` or `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`..._TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED=true`. Off, every call here is a
cheap no-op and opentelemetry is never imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

__all__ = ["Span", "Tracer", "configure_tracing", "tracer"]


class Span(Protocol):
    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass


_NO_SPAN = _NoSpan()


class Tracer:
    """The receiver's and the worker's two kinds of span; a no-op until configured."""

    enabled = False

    @contextlib.contextmanager
    def receive(self, headers: Mapping[str, str], path: str) -> Iterator[tuple[Span, str]]:
        """A SERVER span continuing the caller's trace; yields it and its `traceparent`."""
        yield _NO_SPAN, ""

    @contextlib.contextmanager
    def handle(
        self, traceparent: str, *, consumer: str, stream: str, entry_id: str, deliveries: int
    ) -> Iterator[Span]:
        """A CONSUMER span, child of the receiver's span the entry carries."""
        yield _NO_SPAN

    def shutdown(self) -> None:
        """Export what is buffered; called once at exit."""


class _OtelTracer(Tracer):
    enabled = True

    def __init__(self, provider: Any, component: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = provider.get_tracer("rtt-events." + component)
        self._propagator = TraceContextTextMapPropagator()
        self._provider = provider

    def shutdown(self) -> None:
        self._provider.shutdown()

    @contextlib.contextmanager
    def receive(self, headers: Mapping[str, str], path: str) -> Iterator[tuple[Span, str]]:
        parent = self._propagator.extract(carrier=headers)
        kind = self._trace.SpanKind.SERVER
        with self._tracer.start_as_current_span(f"POST {path}", context=parent, kind=kind) as span:
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("url.path", path)
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
            yield span, carrier.get("traceparent", "")

    @contextlib.contextmanager
    def handle(
        self, traceparent: str, *, consumer: str, stream: str, entry_id: str, deliveries: int
    ) -> Iterator[Span]:
        parent = self._propagator.extract(carrier={"traceparent": traceparent})
        kind = self._trace.SpanKind.CONSUMER
        with self._tracer.start_as_current_span(
            f"{consumer} process", context=parent, kind=kind
        ) as span:
            span.set_attribute("messaging.system", "redis")
            span.set_attribute("messaging.operation.type", "process")
            span.set_attribute("messaging.destination.name", stream)
            span.set_attribute("messaging.consumer.group.name", consumer)
            span.set_attribute("messaging.message.id", entry_id)
            span.set_attribute("rtt.deliveries", deliveries)
            yield span


_tracer: Tracer = Tracer()


def tracer() -> Tracer:
    return _tracer


def configure_tracing(
    component: str, env: Mapping[str, str], *, provider: Any | None = None
) -> Tracer:
    """Turn tracing on when `env` asks for it (or a provider is given, as tests do)."""
    global _tracer
    if provider is None:
        if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or not any(
            env.get(name)
            for name in (
                "OTEL_TRACES_EXPORTER",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            )
        ):
            _tracer = Tracer()
            return _tracer
        provider = _provider_from_env(component, env)
    _tracer = _OtelTracer(provider, component)
    return _tracer


def _provider_from_env(component: str, env: Mapping[str, str]) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "OTEL_* variables ask for tracing, but the SDK is not installed: "
            "pip install 'rtt-events[otel]'"
        ) from exc
    service = env.get("OTEL_SERVICE_NAME") or f"rtt-events-{component}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp")
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
