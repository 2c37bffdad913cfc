"""Many script calls (and plain commands) in one round trip, each with its own outcome.

The alerts consumer does its Redis work for a whole batch of events at once: one pipeline
per step instead of an awaited call per event. On one Redis server, the calls of a script
go as one call of its batched form (the script run for each call's keys and arguments in
turn, in order): per event, the cost is then the script's own work and not a command's
round of packing and parsing. On a cluster, where a script's keys must share a slot, each
call goes as it is. A call that fails on its own (a script error, OOM) is that call's
outcome (for a batched form, every one of its calls'), so only its events fail; Redis
being away raises.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["Call", "run"]


class Call(msgspec.Struct, frozen=True):
    """A script with its keys and arguments; or, with no script, a plain command."""

    script: AsyncScript | None
    keys: Sequence[Any]
    args: Sequence[Any]

    @classmethod
    def command(cls, *args: Any) -> Call:
        return cls(None, (), args)


# The script's body becomes a function whose parameters shadow KEYS and ARGV, run once
# per call; ARGV[1] and ARGV[2] say how many keys and arguments each call has.
_BATCHED: Final = """
local function one(KEYS, ARGV)
%s
end
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 0, (#ARGV - 2) / na - 1 do
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[i * nk + j] end
  for j = 1, na do args[j] = ARGV[2 + i * na + j] end
  out[i + 1] = one(keys, args) or false
end
return out
"""


class _Batched:
    __slots__ = ("script", "sha")

    def __init__(self, body: str | bytes | memoryview) -> None:
        text = bytes(body).decode() if not isinstance(body, str) else body
        self.script = _BATCHED % text
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()


_batched: dict[str, _Batched] = {}  # by the script's SHA1


class _Op(msgspec.Struct):
    """One command of the pipeline, and the calls it answers for."""

    script: AsyncScript | _Batched | None
    keys: list[Any]
    args: list[Any]
    calls: list[int]
    batched: bool = False


async def run(redis: Redis, calls: Sequence[Call]) -> list[Any]:
    """Every call in one non-transactional pipeline; a result or an exception per call.

    The calls of one script run in their order; calls of different scripts and commands
    may run in any order (a script the server had lost runs after the rest), so give one
    batch only calls that touch different keys, or the same keys through one script.
    """
    if not calls:
        return []
    ops = _plan(calls, batch=not isinstance(redis, RedisCluster))
    replies = await _execute(redis, ops)
    # A server that lost its scripts (restarted, SCRIPT FLUSH) ran none of those: load
    # them and run just those again.
    missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        scripts = {id(s): s for n in missing if (s := ops[n].script) is not None}
        for script in scripts.values():
            script.sha = await redis.script_load(script.script)
        again = await _execute(redis, [ops[n] for n in missing])
        for n, reply in zip(missing, again, strict=True):
            replies[n] = reply
    results: list[Any] = [None] * len(calls)
    for op, reply in zip(ops, replies, strict=True):
        if not op.batched or isinstance(reply, Exception):
            for n in op.calls:
                results[n] = reply
        else:
            for n, result in zip(op.calls, reply, strict=True):
                results[n] = result
    return results


def _plan(calls: Sequence[Call], *, batch: bool) -> list[_Op]:
    ops: list[_Op] = []
    grouped: dict[tuple[int, int, int], _Op] = {}
    for n, call in enumerate(calls):
        script = call.script
        if script is None or not batch:
            ops.append(_Op(script, list(call.keys), list(call.args), [n]))
            continue
        shape = (id(script), len(call.keys), len(call.args))
        op = grouped.get(shape)
        if op is None:
            op = grouped[shape] = _Op(script, list(call.keys), list(call.args), [n])
            ops.append(op)
            continue
        if not op.batched:
            batched = _batched.get(script.sha)
            if batched is None:
                batched = _batched[script.sha] = _Batched(script.script)
            op.script, op.batched = batched, True
            op.args[:0] = [len(call.keys), len(call.args)]
        op.keys.extend(call.keys)
        op.args.extend(call.args)
        op.calls.append(n)
    return ops


async def _execute(redis: Redis, ops: Sequence[_Op]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for op in ops:
            if op.script is None:
                pipe.execute_command(*op.args)
            else:
                pipe.evalsha(op.script.sha, len(op.keys), *op.keys, *op.args)
        return list(await pipe.execute(raise_on_error=False))
