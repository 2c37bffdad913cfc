"""The aiohttp application: authenticate, decode, store, answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import structlog
from aiohttp import web
from redis.asyncio import Redis

from shared.entries import Fields, StreamEntry
from shared.events import DecodeFailure, UnknownEvent, decode_event
from shared.keys import Keys
from shared.logs import get_logger
from shared.settings import Settings

from .store import Store, StoreItem, StoreUnavailable

__all__ = ["SETTINGS", "STORE", "create_app"]

SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", Keys)
STORE = web.AppKey("store", Store)

log = get_logger()
_JSON_TYPES = frozenset({"application/json", "text/json"})
_encode = msgspec.json.encode


@web.middleware
async def request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bind a request id to every log line of this request (each request has its own task)."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = request_id
    return response


def _is_json(request: web.Request) -> bool:
    ctype = request.content_type
    return ctype in _JSON_TYPES or ctype.endswith("+json")


def _bad_request(failure: DecodeFailure) -> web.Response:
    return web.Response(
        status=400, body=_encode({"error": failure.error, "path": failure.path}),
        content_type="application/json",
    )  # fmt: skip


async def receive_event(request: web.Request) -> web.StreamResponse:
    settings, keys, store = request.app[SETTINGS], request.app[KEYS], request.app[STORE]
    if not _is_json(request):
        return web.json_response(
            {"error": f"expected a JSON content type, got {request.content_type}", "path": "$"},
            status=415,
        )
    body = await request.read()  # over client_max_size: aiohttp answers 413
    received_at_ms = time.time_ns() // 1_000_000
    request_id = structlog.contextvars.get_contextvars().get("request_id", "")
    decoded = decode_event(body)
    if isinstance(decoded, DecodeFailure):
        log.warning("event_rejected", error=decoded.error, path=decoded.path, peer=request.remote)
        rejected: Fields = {
            "body": body[:4096], "error": decoded.error, "path": decoded.path,
            "peer": request.remote or "", "received_at": received_at_ms, "request_id": request_id,
        }  # fmt: skip
        try:
            await store.put(StoreItem(keys.rejected, rejected, max_len=settings.forensic_max_len))
        except StoreUnavailable:
            log.error("rejected_body_not_kept", error=decoded.error)
        return _bad_request(decoded)
    if isinstance(decoded, UnknownEvent):
        log.warning("event_type_unknown", event_type=decoded.event_type, call_id=decoded.call_id)
        entry = StreamEntry(decoded.event_type, body, received_at_ms, request_id)
        item = StoreItem(keys.unknown, entry.to_fields(), max_len=settings.forensic_max_len)
    else:
        entry = StreamEntry(decoded.event_type, body, received_at_ms, request_id)
        item = StoreItem(keys.stream_for_call(decoded.call_id), entry.to_fields())
    try:
        outcome = await store.put(item)
    except StoreUnavailable as exc:
        log.error("event_not_stored", error=str(exc))
        return web.json_response(
            {"error": "storage unavailable, retry later", "path": "$"},
            status=503, headers={"Retry-After": "5"},
        )  # fmt: skip
    log.debug("event_accepted", event_type=entry.type, outcome=outcome.value)
    return web.Response(status=204)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if await store.ready():
        return web.json_response({"status": "ready", "store": store.mode})
    return web.json_response({"status": "unavailable", "store": store.mode}, status=503)


def create_app(settings: Settings, redis: Redis, store: Store | None = None) -> web.Application:
    """The receiver. The caller owns `redis`; the app owns the store's lifetime."""
    app = web.Application(middlewares=[request_context], client_max_size=settings.max_body_size)
    app[SETTINGS] = settings
    app[KEYS] = Keys(settings.key_prefix, settings.shards)
    app[STORE] = store or Store(redis)

    async def store_lifetime(app: web.Application) -> AsyncIterator[None]:
        await app[STORE].start()
        yield
        await app[STORE].close()

    app.cleanup_ctx.append(store_lifetime)
    app.router.add_post(settings.path, receive_event)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
