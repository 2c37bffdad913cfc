"""A consumer for the process tests: it records every delivery it handles in Redis.

Loaded by worker child processes with `--consumer tests.worker.plugins:recorder`; set up
through environment variables, as a plugin author's own consumer would be:
`REC_SLEEP_MS` (handler time), `REC_FAIL_KEY` (fail while this key exists).

Records, under the worker's key prefix:
- `test:started` list and `test:log` list: "<entry id> <deliveries> <worker id> <ms>";
- `test:handled` hash: entry id -> how many times a handler finished it.
"""

from __future__ import annotations

import asyncio
import os
import time

from shared.events import Event
from worker import Context, SetupContext, consumer


def started_key(prefix: str) -> str:
    return f"{prefix}:test:started"


def log_key(prefix: str) -> str:
    return f"{prefix}:test:log"


def handled_key(prefix: str) -> str:
    return f"{prefix}:test:handled"


def parse(record: bytes) -> tuple[str, int, str, int]:
    entry_id, deliveries, worker_id, at_ms = record.decode().split()
    return entry_id, int(deliveries), worker_id, int(at_ms)


class Recorder:
    async def setup(self, ctx: SetupContext) -> None:
        self.sleep_s = int(os.environ.get("REC_SLEEP_MS", "0")) / 1000
        self.fail_key = os.environ.get("REC_FAIL_KEY")

    async def handle(self, event: Event, ctx: Context) -> None:
        prefix = ctx.key_prefix
        record = f"{ctx.entry_id} {ctx.deliveries} {ctx.worker_id} {time.time_ns() // 10**6}"
        await ctx.redis.rpush(started_key(prefix), record)
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if self.fail_key and await ctx.redis.exists(self.fail_key):
            raise RuntimeError("told to fail")
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(log_key(prefix), record)
            pipe.hincrby(handled_key(prefix), ctx.entry_id, 1)
            await pipe.execute()


recorder = consumer("recorder")(Recorder)
