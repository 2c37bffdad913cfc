"""The aiohttp application: admit, decode, store, answer."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from redis.asyncio import Redis
from structlog.contextvars import bind_contextvars, reset_contextvars

from shared.entries import Fields, entry_fields
from shared.events import (
    DecodeFailure,
    UnknownEvent,
    decode_event,
    event_identity,
    unknown_cause,
)
from shared.keys import Keys
from shared.logs import get_logger
from shared.settings import Settings
from shared.tracing import tracer

from .auth import Gate, Refusal, open_to_anyone, parse_networks
from .batching import ItemRefused, RedisFailed, StoreItem
from .metrics import ReceiverMetrics
from .store import Outcome, Store, StoreUnavailable

__all__ = ["HANDLER", "METRICS", "SETTINGS", "STORE", "create_app"]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", ReceiverMetrics)

log = get_logger()
_JSON_TYPES = frozenset({"application/json", "text/json"})
# Content-Type headers as clients usually write them: JSON, no parameter to parse.
_JSON_HEADERS = frozenset(
    {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
)
_REJECTED_BODY_BYTES = 4096
_REQUEST_ID_CHARS = 128
# What a client can read back in the answer's header and find in the logs as it sent it.
_CLIENT_REQUEST_ID = re.compile(r"[\x20-\x7e]+")
_encode = msgspec.json.encode
_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# Stored events whose metric updates wait for the next scrape, at most.
_TALLY_MAX = 1024


def _new_id() -> str:
    return os.urandom(16).hex()


# A request id needs to be unique, not secret: a random prefix per process and a counter,
# 32 hex digits as before, without a getrandom call per request. The counter starts at
# 2**60 (plus a random offset), so its hex is 16 digits for the next 2**63 requests.
_ID_PREFIX = os.urandom(8).hex()
_next_id = itertools.count((1 << 60) + int.from_bytes(os.urandom(4))).__next__


def _new_request_id() -> str:
    return _ID_PREFIX + hex(_next_id())[2:]


def _request_id(sent: str | None) -> str:
    """The client's `X-Request-Id` if it is printable ASCII, else a fresh one.

    aiohttp keeps a byte outside UTF-8 as a surrogate, which no encoder takes: such an id
    is replaced here, before it reaches a stream entry, a log line or the answer.
    """
    if sent is None:  # the usual case: Bandwidth sends none
        return _new_request_id()
    sent = sent[:_REQUEST_ID_CHARS]
    if _CLIENT_REQUEST_ID.fullmatch(sent):
        return sent
    if sent:
        log.debug("request_id_replaced", sent=ascii(sent))
    return _new_request_id()


def _is_json(request: web.BaseRequest) -> tuple[bool, str]:
    """Whether the body is declared JSON, and its media type as read."""
    ctype = _media_type(request)
    return ctype in _JSON_TYPES or ctype.endswith("+json"), ctype


def _media_type(request: web.BaseRequest) -> str:
    """The media type of the body, even where aiohttp's parser of its parameters fails."""
    try:
        return request.content_type
    except (IndexError, ValueError):
        # aiohttp raises IndexError on a parameter name ending in `*` (`; charset*`).
        return request.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def _printable(text: str) -> str:
    """Header text for an answer: bytes outside UTF-8 (surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode()


def _error(status: int, message: str, request_id: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=_encode({"error": message, "path": "$"}),
        content_type="application/json",
        headers={**headers, "X-Request-Id": request_id},
    )


class _WebhookHandler:
    """The handler of the events path and what it needs, resolved once per app.

    `handle` is the path every event takes, kept to what each request must do: what can
    be resolved once (keys, metric children, the expected credentials) is resolved here.
    """

    def __init__(self, settings: Settings, store: Store, metrics: ReceiverMetrics) -> None:
        self.keys = Keys(settings.key_prefix, settings.shards)
        self.path = settings.path
        self._streams = [
            (self.keys.events(shard), self.keys.dedup_prefix(shard))
            for shard in range(settings.shards)
        ]
        self.store = store
        self.metrics = metrics
        self.tracer = tracer()
        self.gate = Gate(
            credentials=settings.basic_auth,
            realm=settings.auth_realm,
            allow=parse_networks(settings.allow_cidrs, "RTT_ALLOW_CIDRS"),
            trusted_proxies=parse_networks(settings.trusted_proxies, "RTT_TRUSTED_PROXIES"),
        )
        self.read_timeout_s = settings.read_timeout.total_seconds()
        self.max_body_size = settings.max_body_size
        self.forensic_max_len = settings.forensic_max_len
        # Only at debug level is there a line per accepted event; skip building it otherwise.
        self.log_accepted = settings.log_level == "debug"
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers = {outcome: metrics.store_seconds.labels(outcome) for outcome in Outcome}
        # Stored events' metric updates, applied in bulk (`fold_metrics`): at each scrape,
        # and every _TALLY_MAX events. Not with PROMETHEUS_MULTIPROC_DIR (--processes N):
        # another process answers the scrape, and a killed one would lose what it held.
        self._defer = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._tally: list[tuple[Outcome, str, float]] = []
        # structlog's own context variables of the events path, set directly: what
        # bind_contextvars does, without its loop and lookups on every event.
        tokens = bind_contextvars(request_id=None, call_id=None, transcription_id=None)
        reset_contextvars(**tokens)
        self._bind_request_id = tokens["request_id"].var.set
        self._bind_call_id = tokens["call_id"].var.set
        self._bind_transcription_id = tokens["transcription_id"].var.set

    @property
    def route(self) -> _Handler:
        """What the route calls: with tracing on, each request in a span of its own."""
        return self.handle_traced if self.tracer.enabled else self.handle

    def dispatcher(self, fallback: _Handler) -> _Handler:
        """The server's request handler: a POST to the events path goes straight to
        `route`, past the router and its match info; everything else (and a request that
        expects `100 Continue`) through `fallback`, the app's own handler.

        A plain function returning the handler's coroutine: no frame of its own.
        """
        route, path = self.route, self.path

        def dispatch(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            hot = request.raw_path == path and request.method == "POST"
            if hot and "Expect" not in request.headers:
                return route(request)
            return fallback(request)

        return dispatch

    def _count(self, outcome: str, event_type: str = "", n: int = 1) -> None:
        # Label values are a closed set (outcomes; known event types or "unknown").
        counter = self._counters.get((outcome, event_type))
        if counter is None:
            counter = self._counters[outcome, event_type] = self.metrics.requests.labels(
                outcome, event_type
            )
        counter.inc(n)

    def fold_metrics(self) -> None:
        """Apply the tallied updates of stored events to the metrics (before a scrape)."""
        tally, self._tally = self._tally, []
        if not tally:
            return
        groups: dict[tuple[Outcome, str], list[float]] = {}
        for outcome, label, seconds in tally:
            groups.setdefault((outcome, label), []).append(seconds)
        for (outcome, label), timings in groups.items():
            self._record(outcome, label, len(timings), timings)

    def _record(self, outcome: Outcome, label: str, n: int, seconds: list[float]) -> None:
        self._count(outcome, label, n)
        if outcome is Outcome.DUPLICATE:
            self.metrics.dedup_hits.inc(n)
        # The histogram's public observe, once a timing: its internals (the buckets and
        # their bounds) are prometheus-client's to change. 0.6 us more a stored event than
        # filling the buckets by hand (timeit, 1,024 timings): about 1 % of a request.
        observe = self._timers[outcome].observe
        for elapsed in seconds:
            observe(elapsed)

    async def handle_traced(self, request: web.BaseRequest) -> web.StreamResponse:
        with self.tracer.receive(request.headers, request.path) as (span, traceparent):
            response = await self.handle(request, traceparent)
            span.set_attribute("http.response.status_code", response.status)
        return response

    async def handle(self, request: web.BaseRequest, traceparent: str = "") -> web.StreamResponse:
        headers = request.headers
        request_id = _request_id(headers.get("X-Request-Id"))
        refusal = self.gate.refusal(request)
        if refusal is not None:
            bind_contextvars(request_id=request_id)
            return self._refuse(request, refusal, request_id)
        if headers.get("Content-Type") not in _JSON_HEADERS:  # else JSON, as clients send it
            is_json, ctype = _is_json(request)
            if not is_json:
                bind_contextvars(request_id=request_id)
                self._count("unsupported_media_type")
                return _error(
                    415, f"expected a JSON content type, got {_printable(ctype)}", request_id
                )
        content = request.content
        try:
            if content.is_eof():  # the usual small body came with the head: no await
                body = content.read_nowait()
                if len(body) > self.max_body_size:
                    raise web.HTTPRequestEntityTooLarge(
                        max_size=self.max_body_size, actual_size=len(body)
                    )
            else:
                async with asyncio.timeout(self.read_timeout_s):
                    body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            bind_contextvars(request_id=request_id)
            self._count("too_large")
            raise
        except TimeoutError:
            bind_contextvars(request_id=request_id)
            log.warning("request_body_timeout", peer=self.gate.client_address(request))
            self._count("timeout")
            return _error(408, "request body not received in time", request_id, Connection="close")
        received_at_ms = time.time_ns() // 1_000_000
        decoded = decode_event(body)
        if isinstance(decoded, DecodeFailure):
            bind_contextvars(request_id=request_id)
            client = self.gate.client_address(request)
            return await self._reject(decoded, body, client, received_at_ms, request_id)
        if isinstance(decoded, UnknownEvent):
            item, event_type, label = self._unknown(
                decoded, body, received_at_ms, request_id, traceparent
            )
        else:
            call_id = decoded.call_id
            # aiohttp runs each request in a task of its own, so these bindings end with it.
            self._bind_request_id(request_id)
            self._bind_call_id(call_id)
            self._bind_transcription_id(decoded.transcription_info.id)
            event_type = label = decoded.event_type
            cause = unknown_cause(decoded)
            if cause is not None:
                # Accepted all the same: Bandwidth may add causes; an operator should know.
                log.warning("event_cause_unknown", event_type=event_type, cause=cause)
            stream, dedup_prefix = self._streams[self.keys.shard_of(call_id)]
            item = StoreItem(
                stream,
                entry_fields(event_type, body, received_at_ms, request_id, traceparent),
                dedup_prefix + event_identity(decoded),
            )
        started = time.perf_counter()
        store = self.store
        try:
            # While Redis takes events, the writer's own future: one coroutine less.
            pending = store.redis_future(item)
            if pending is None:
                outcome = await store.put(item)
            else:
                try:
                    entry_id = await pending
                except (RedisFailed, ItemRefused) as exc:
                    outcome = await store.after_failure(item, exc)
                else:
                    outcome = Outcome.STORED if entry_id is not None else Outcome.DUPLICATE
        except StoreUnavailable as exc:
            log.error("event_not_stored", error=str(exc), event_type=event_type)
            self._count("unavailable", label)
            return _error(
                503, "storage unavailable, retry later", request_id, **{"Retry-After": "5"}
            )
        elapsed = time.perf_counter() - started
        if self._defer:
            tally = self._tally
            tally.append((outcome, label, elapsed))
            if len(tally) >= _TALLY_MAX:
                self.fold_metrics()
        else:
            self._record(outcome, label, 1, [elapsed])
        if self.log_accepted and not isinstance(decoded, UnknownEvent):
            log.debug(
                "event_accepted",
                event_type=event_type,
                outcome=outcome.value,
                **{"from": decoded.from_, "to": decoded.to},
            )
        return web.Response(status=204, headers={"X-Request-Id": request_id})

    def _refuse(self, request: web.BaseRequest, refusal: Refusal, request_id: str) -> web.Response:
        if refusal == "forbidden":
            log.warning("request_forbidden", peer=self.gate.client_address(request))
            self._count("forbidden")
            return _error(403, "source address not allowed", request_id)
        # A first request without credentials is Bandwidth's normal challenge flow.
        level = log.debug if refusal == "missing" else log.warning
        level("request_unauthorized", reason=refusal, peer=self.gate.client_address(request))
        self._count("unauthorized")
        return _error(
            401, "credentials required", request_id, **{"WWW-Authenticate": self.gate.challenge}
        )

    def _unknown(
        self,
        decoded: UnknownEvent,
        body: bytes,
        received_at_ms: int,
        request_id: str,
        traceparent: str,
    ) -> tuple[StoreItem, str, str]:
        """The item of a type this version does not know: kept on `rtt:unknown`."""
        bind_contextvars(request_id=request_id, call_id=decoded.call_id)
        log.warning("event_type_unknown", event_type=decoded.event_type)
        # No identity of its own: the body's digest keeps a drain retry from adding it twice.
        identity = hashlib.blake2b(body, digest_size=16).hexdigest()
        stream = self.keys.unknown
        item = StoreItem(
            stream,
            entry_fields(decoded.event_type, body, received_at_ms, request_id, traceparent),
            dedup_key=self.keys.forensic_markers(stream),
            max_len=self.forensic_max_len,
            marker=identity,
        )
        return item, decoded.event_type, "unknown"

    async def _reject(
        self,
        failure: DecodeFailure,
        body: bytes,
        client: str | None,
        received_at_ms: int,
        request_id: str,
    ) -> web.Response:
        log.warning("event_rejected", error=failure.error, path=failure.path, peer=client)
        self.metrics.decode_errors.inc()
        self._count("invalid")
        rejected: Fields = {
            "body": body[:_REJECTED_BODY_BYTES],
            "error": failure.error,
            "path": failure.path,
            "peer": client or "",
            "received_at": received_at_ms,
            "request_id": request_id,
        }
        stream = self.keys.rejected
        # Every 400 is kept once: a fresh identity, so only a retry of this write is a repeat.
        markers = self.keys.forensic_markers(stream)
        item = StoreItem(stream, rejected, markers, self.forensic_max_len, marker=_new_id())
        try:
            await self.store.put(item)
        except StoreUnavailable as exc:
            log.error("rejected_body_not_kept", error=str(exc))
        return web.Response(
            status=400,
            body=_encode({"error": failure.error, "path": failure.path}),
            content_type="application/json",
            headers={"X-Request-Id": request_id},
        )


# The events path's handler, for the runner's dispatcher (receiver.server).
HANDLER = web.AppKey("handler", _WebhookHandler)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if await store.ready():
        return web.json_response({"status": "ready", "store": store.mode})
    answer = {"status": "unavailable", "store": store.mode}
    if store.spool_error is not None:
        answer["spool"] = store.spool_error
    return web.json_response(answer, status=503)


async def metrics(request: web.Request) -> web.Response:
    request.app[HANDLER].fold_metrics()
    request.app[STORE].update_gauges()
    body, content_type = request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def create_app(
    settings: Settings,
    redis: Redis,
    *,
    spool_dir: str | Path | None = None,
    orphan_spool_dirs: tuple[Path, ...] = (),
) -> web.Application:
    """The receiver. The caller owns `redis`; the app owns the store's lifetime.

    `spool_dir` is this process's own spool (default: `<RTT_SPOOL_DIR>/p0`).
    """
    app = web.Application(client_max_size=settings.max_body_size)
    app[SETTINGS] = settings
    app[METRICS] = ReceiverMetrics()
    app[STORE] = Store(
        redis,
        spool_dir=spool_dir or Path(settings.spool_dir) / "p0",
        orphan_spool_dirs=orphan_spool_dirs,
        dedup_ttl_s=settings.dedup_window.total_seconds(),
        timeout_s=settings.store_timeout.total_seconds(),
        batch_max=settings.store_batch_max,
        replicas=settings.store_replicas,
        replicas_timeout_s=settings.store_replicas_timeout.total_seconds(),
        close_timeout_s=settings.shutdown_timeout.total_seconds(),
        metrics=app[METRICS],
    )
    app[METRICS].open_to_anyone.set(
        open_to_anyone(settings.host, settings.basic_auth, settings.allow_cidrs)
    )
    handler = app[HANDLER] = _WebhookHandler(settings, app[STORE], app[METRICS])

    async def store_lifetime(app: web.Application) -> AsyncIterator[None]:
        await app[STORE].start()
        yield
        await app[STORE].close()

    app.cleanup_ctx.append(store_lifetime)
    app.router.add_post(settings.path, handler.route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
