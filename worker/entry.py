"""`rtt worker` / `python -m worker`."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from collections.abc import Sequence

from redis.exceptions import ResponseError

from shared.cli_support import require_redis_url, settings_from_args, settings_parser
from shared.connections import (
    PermissionDenied,
    RedisRefused,
    check_redis,
    create_redis,
    is_permission_denied,
    on_permission_denied,
)
from shared.lifeline import watch_parent
from shared.listen import listen_error
from shared.logs import error_text, get_logger
from shared.loop import loop_name, run
from shared.settings import WORKER_SETTINGS, Settings
from shared.signals import STOP_SIGNALS
from shared.tracing import configure_tracing, tracer

from .alerts import AlertOptions, make_alerts_consumer
from .consumers import Consumer, ConsumerLoadError, load_consumers, resolve_options
from .heartbeat import WorkerIdInUse
from .runtime import Worker

__all__ = ["main", "run_worker"]

# Exit status when Redis refuses these settings (TLS, password, ACL); 2 is a bad setting.
REDIS_REFUSED = 3

log = get_logger()


async def run_worker(settings: Settings, consumers: Sequence[Consumer]) -> None:
    """Run until SIGTERM or SIGINT; in-flight handlers finish, the rest stays pending.
    A second signal stops at once, leaving in-flight entries pending too."""
    redis = create_redis(settings)
    try:
        # TLS, password and ACL mistakes stop the worker with one line; a Redis that is
        # merely down is waited for.
        await check_redis(redis, settings)
    except RedisRefused:
        await redis.aclose()
        raise
    worker = Worker(settings, redis, consumers)
    refused: list[PermissionDenied] = []

    def on_denied(denied: PermissionDenied) -> None:
        # A missing ACL grant does not heal by retrying: stop, handing work back.
        refused.append(denied)
        worker.stop()

    on_permission_denied(redis, on_denied)
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(force=signals > 1)

    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal stops the worker as cleanly as Ctrl-C does.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    log.info(
        "worker_started",
        worker_id=worker.worker_id,
        consumers=[c.name for c in consumers],
        loop=loop_name(),
    )
    try:
        await worker.run()
    except ResponseError as exc:
        # Refused outside the readers' loops (the heartbeat's first pipeline): said once
        # already, and the one line below says it again.
        if not (refused and is_permission_denied(exc)):
            raise
    finally:
        await redis.aclose()
        log.info("worker_stopped", worker_id=worker.worker_id)
    if refused:
        raise refused[0]


def consumer_import_path(directory: str | None = None) -> None:
    """Let `--consumer my_module:name` find `my_module.py` in the directory the worker
    was started from, however it was started (`rtt worker`, `python -m worker`, or under
    `rtt serve`, which starts it with `python -P`). Searched last, after the installed
    packages, so a file there never replaces a module rtt-events itself uses."""
    directory = os.path.abspath(directory or os.getcwd())
    if directory not in (os.path.abspath(entry or os.curdir) for entry in sys.path):
        sys.path.append(directory)


def main(argv: Sequence[str] | None = None, prog: str = "rtt worker") -> int:
    parser = settings_parser(prog, "Run consumers on the event streams.", WORKER_SETTINGS)
    _, settings = settings_from_args(parser, argv, WORKER_SETTINGS, component="worker")
    require_redis_url(parser, settings)
    watch_parent(settings.shutdown_timeout.total_seconds() + 10)
    consumer_import_path()
    try:
        consumers = load_consumers(
            settings.consumer, builtin=[make_alerts_consumer(AlertOptions.from_settings(settings))]
        )
        for item in consumers:
            resolve_options(item, settings)
    except ConsumerLoadError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        configure_tracing("worker", os.environ)
    except RuntimeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        run(run_worker(settings, consumers))
    except WorkerIdInUse as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except RedisRefused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return REDIS_REFUSED
    except OSError as exc:
        if exc.errno not in {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL}:
            log.error("worker_failed", error=error_text(exc), exc_info=exc)
            return 1
        # The only socket the worker listens on: its /metrics.
        port = settings.worker_metrics_port
        host = settings.worker_metrics_listen_host
        error = listen_error(exc, host, port, "RTT_WORKER_METRICS_PORT")
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    except Exception as exc:
        log.error("worker_failed", error=error_text(exc), exc_info=exc)
        return 1
    finally:
        tracer().shutdown()
    return 0
