"""Many script calls in one round trip: the same results as one call at a time."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from worker.alerts.pipelined import Call, run

_INCR_BY: str = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value > 100 then return redis.error_reply('too much') end
return {KEYS[1], value}
"""


async def test_calls_of_one_script_answer_each_in_order(redis: Redis, prefix: str) -> None:
    script = redis.register_script(_INCR_BY)
    keys = [f"{prefix}:a", f"{prefix}:b", f"{prefix}:a"]
    calls = [Call(script, [key], [n + 1]) for n, key in enumerate(keys)]
    calls.append(Call.command("SET", f"{prefix}:other", "x"))
    results = await run(redis, calls)
    assert results == [[keys[0].encode(), 1], [keys[1].encode(), 2], [keys[0].encode(), 4], True]
    assert await redis.get(f"{prefix}:other") == b"x"


async def test_a_failing_command_fails_only_its_own_call(redis: Redis, prefix: str) -> None:
    script = redis.register_script(_INCR_BY)
    await redis.set(f"{prefix}:text", "not a number")
    results = await run(
        redis,
        [
            Call.command("HINCRBY", f"{prefix}:text", "field", 1),
            Call(script, [f"{prefix}:c"], [5]),
            Call(script, [f"{prefix}:d"], [500]),  # its batch: the script's calls
        ],
    )
    assert isinstance(results[0], ResponseError)
    assert isinstance(results[2], ResponseError)
    assert "too much" in str(results[2])


async def test_scripts_lost_by_the_server_are_loaded_again(redis: Redis, prefix: str) -> None:
    script = redis.register_script(_INCR_BY)
    calls = [Call(script, [f"{prefix}:e"], [1]), Call(script, [f"{prefix}:f"], [1])]
    await run(redis, calls)
    await redis.script_flush()
    assert await run(redis, [calls[0]]) == [[f"{prefix}:e".encode(), 2]]
    assert await run(redis, calls) == [[f"{prefix}:e".encode(), 3], [f"{prefix}:f".encode(), 2]]


async def test_arguments_that_are_not_text_still_reach_the_script(
    redis: Redis, prefix: str
) -> None:
    script = redis.register_script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
    calls = [
        Call(script, [f"{prefix}:bin"], [b"\xff\xfe raw"]),
        Call(script, [f"{prefix}:text"], [b'{"json": "\xc3\xa9"}']),
        Call(script, [f"{prefix}:number"], [1_700_000_000_123]),
    ]
    assert await run(redis, calls) == [1, 1, 1]
    assert await redis.get(f"{prefix}:bin") == b"\xff\xfe raw"
    assert await redis.get(f"{prefix}:text") == '{"json": "é"}'.encode()
    assert await redis.get(f"{prefix}:number") == b"1700000000123"
