"""Run the receiver until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from shared.connections import create_redis
from shared.logs import get_logger
from shared.settings import Settings

from .app import create_app

__all__ = ["serve"]

log = get_logger()


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until a stop signal; in-flight requests finish before the store closes."""
    redis = create_redis(settings)
    app = create_app(settings, redis)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.store_timeout.total_seconds() + 5,
        max_line_size=settings.max_header_size,
        max_field_size=settings.max_header_size,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
        log.info("receiver_listening", host=settings.host, port=settings.port, path=settings.path)
        await stop.wait()
        log.info("receiver_stopping")
    finally:
        # Stops accepting, waits for in-flight requests, then runs cleanup_ctx (store close).
        await runner.cleanup()
        await redis.aclose()
        log.info("receiver_stopped")
