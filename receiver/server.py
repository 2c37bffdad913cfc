"""Run one receiver process until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from shared.connections import RedisRefused, check_redis, create_redis
from shared.listen import listen_error
from shared.logs import get_logger
from shared.loop import loop_name
from shared.settings import Settings
from shared.signals import STOP_SIGNALS

from .app import HANDLER, create_app
from .auth import open_to_anyone

__all__ = ["ReceiverRunner", "make_runner", "serve", "spool_dirs"]

log = get_logger()
_SLOT_DIR = re.compile(r"^p(\d+)$")


def spool_dirs(settings: Settings, index: int = 0, processes: int = 1) -> tuple[Path, list[Path]]:
    """This process's spool, `<RTT_SPOOL_DIR>/p<index>`, and the spools it must also drain.

    Stable names let a restarted process drain what its predecessor left. Process 0 also
    drains the spools of slots that no longer exist (the receiver ran with more processes).
    """
    root = Path(settings.spool_dir)
    orphans: list[Path] = []
    if index == 0 and root.is_dir():
        for path in sorted(root.iterdir()):
            match = _SLOT_DIR.match(path.name)
            if match and int(match[1]) >= processes:
                orphans.append(path)
    return root / f"p{index}", orphans


class ReceiverRunner(web.AppRunner):
    """The app's runner, whose server hands a POST to the events path straight to the
    handler (`_WebhookHandler.dispatcher`), past the router, its match info and the
    response signals. Every other request, and everything the app does at start and
    stop, is the app's as with `web.AppRunner`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = self.app[HANDLER].dispatcher(server.request_handler)
        return server


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The HTTP server's limits: header sizes, slow clients, the grace period at stop."""
    read_timeout_s = settings.read_timeout.total_seconds()
    return ReceiverRunner(
        app,
        handle_signals=False,
        access_log=None,
        # In-flight requests may wait for the store deadline, then for the spool's fsync.
        shutdown_timeout=settings.store_timeout.total_seconds() + read_timeout_s + 5,
        # An idle connection, or one whose request head trickles in, is closed after this.
        keepalive_timeout=read_timeout_s,
        # After an answer given before the body was read (401, 408...), aiohttp reads the
        # rest to keep the connection; a client that never sends it is cut off after this.
        lingering_time=read_timeout_s,
        max_line_size=settings.max_header_size,
        max_field_size=settings.max_header_size,
    )


async def _say_if_refused(redis: Redis, settings: Settings) -> None:
    try:
        await check_redis(redis, settings)
    except RedisRefused as exc:
        # Events are still accepted: they wait in the spool until the setting is fixed.
        log.error("redis_refused", error=str(exc), note="events are kept in the spool")


async def serve(
    settings: Settings, *, index: int = 0, processes: int = 1, reuse_port: bool = False
) -> None:
    """Serve until a stop signal (SIGTERM, SIGINT, SIGHUP).

    Raises ListenError (the message names the setting) if it cannot listen.

    On SIGTERM the listener closes first, requests in flight finish, then the store writes
    what it holds, tries a last drain of the spool into Redis and closes the spool.
    """
    redis = create_redis(settings)
    own, orphans = spool_dirs(settings, index, processes)
    app = create_app(settings, redis, spool_dir=own, orphan_spool_dirs=tuple(orphans))
    runner = make_runner(app, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal stops the receiver as cleanly as Ctrl-C does.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    check: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            error = listen_error(exc, settings.host, settings.port, "RTT_PORT")
            # stderr gets the one line for a person; the log, which a collector reads, too.
            log.error(
                "receiver_listen_failed",
                host=settings.host,
                port=settings.port,
                setting="RTT_PORT",
                error=str(error),
            )
            raise error from None
        log.info(
            "receiver_listening",
            host=settings.host,
            port=settings.port,
            path=settings.path,
            spool_dir=str(own),
            process=index,
            pid=os.getpid(),
            loop=loop_name(),
        )
        if index == 0 and open_to_anyone(settings.host, settings.basic_auth, settings.allow_cidrs):
            log.warning(
                "receiver_open_to_anyone",
                host=settings.host,
                port=settings.port,
                note="anyone who reaches this port may post events and raise alerts: set "
                "RTT_BASIC_AUTH (what Bandwidth sends) or RTT_ALLOW_CIDRS",
            )
        check = asyncio.create_task(_say_if_refused(redis, settings), name="redis-check")
        await stop.wait()
        log.info("receiver_stopping")
    finally:
        if check is not None:
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
        # Stops accepting, waits for in-flight requests, then runs cleanup_ctx (store close).
        await runner.cleanup()
        await redis.aclose()
        # The signal handlers stay with the loop: a second stop signal is not fatal.
        log.info("receiver_stopped")
