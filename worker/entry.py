"""`rtt worker` / `python -m worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from shared.cli_support import settings_from_args, settings_parser
from shared.connections import create_redis
from shared.logs import get_logger
from shared.loop import loop_name, run
from shared.settings import WORKER_SETTINGS, Settings
from shared.tracing import configure_tracing, tracer

from .alerts import make_alerts_consumer
from .consumers import Consumer, ConsumerLoadError, load_consumers, resolve_options
from .heartbeat import WorkerIdInUse
from .runtime import Worker

__all__ = ["main", "run_worker"]

log = get_logger()


async def run_worker(settings: Settings, consumers: Sequence[Consumer]) -> None:
    """Run until SIGTERM or SIGINT; in-flight handlers finish, the rest stays pending.
    A second signal stops at once, leaving in-flight entries pending too."""
    redis = create_redis(settings)
    worker = Worker(settings, redis, consumers)
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(force=signals > 1)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    log.info(
        "worker_started",
        worker_id=worker.worker_id,
        consumers=[c.name for c in consumers],
        loop=loop_name(),
    )
    try:
        await worker.run()
    finally:
        await redis.aclose()
        log.info("worker_stopped", worker_id=worker.worker_id)


def main(argv: Sequence[str] | None = None, prog: str = "rtt worker") -> int:
    parser = settings_parser(prog, "Run consumers on the event streams.", WORKER_SETTINGS)
    _, settings = settings_from_args(parser, argv, WORKER_SETTINGS, component="worker")
    if not settings.redis_url:
        parser.error("RTT_REDIS_URL (or --redis-url) is required; `rtt serve` embeds a server")
    try:
        consumers = load_consumers(settings.consumer, builtin=[make_alerts_consumer(settings)])
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
    except Exception as exc:
        log.error("worker_failed", error=repr(exc), exc_info=exc)
        return 1
    finally:
        tracer().shutdown()
    return 0
