"""A client from `create_redis` serves as many commands at once as its users make: a worker
runs 64 handlers per consumer, each with its own Redis calls, beside its readers. redis-py
8 caps a pool at 100 connections and fails the next command (MaxConnectionsError)."""

from __future__ import annotations

import asyncio

from shared.connections import create_redis
from shared.settings import load_settings

AT_ONCE = 150


async def test_more_commands_at_once_than_redis_pys_default_pool_holds(redis_url: str) -> None:
    client = create_redis(load_settings(env={"RTT_REDIS_URL": redis_url}))
    try:
        # Each holds its connection for the block: none can share one.
        replies = await asyncio.gather(
            *(client.blpop([f"pool-test-{n}"], timeout=0.5) for n in range(AT_ONCE))
        )
    finally:
        await client.aclose()
    assert replies == [None] * AT_ONCE
