"""Many script calls (and plain commands) in one round trip, each with its own outcome.

The alerts consumer does its Redis work for a whole batch of events at once: one pipeline
per step instead of an awaited call per event. On one Redis server, the calls of a script
go as one call of its batched form (the script run for each call's keys and arguments in
turn, in order), its keys each named once and the calls' arguments packed in one
MessagePack argument: per event, the cost is then the script's own work and not a
command's round of packing and parsing. A call that fails on its own (a script error,
OOM) is that call's outcome (for a batched form, every one of its calls'), so only its
events fail; Redis being away raises.

On a cluster, where a script's keys must share a slot, the calls go as they are (the
scripts that take a batch's items split them by slot: `by_slot`), in one cluster pipeline:
a round trip to each node, the nodes side by side.

With `wait` (RTT_STORE_REPLICAS), the pipeline ends with WAIT on its connection, and the
batch counts as written only once that many replicas have it: fewer in time raises
NotReplicated, as Redis being away would. Not on a cluster, where WAIT would have to go to
each key's node: there the calls are written on the master alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from shared.replicas import Wait, confirm

__all__ = ["Call", "Split", "by_slot", "per_item", "run"]


class Call(msgspec.Struct, frozen=True):
    """A script with its keys and arguments; or, with no script, a plain command."""

    script: AsyncScript | None
    keys: Sequence[Any]
    args: Sequence[Any]

    @classmethod
    def command(cls, *args: Any) -> Call:
        return cls(None, (), args)


class Split(msgspec.Struct, frozen=True):
    """One call made for many items of a batch (their indices): a script that loops over
    them and answers a list, one result per item, or one result for them all."""

    call: Call
    items: list[int]


def by_slot(redis: Redis, items: Sequence[T], key_of: Callable[[T], str]) -> list[list[int]]:
    """The indices of `items`, in one group; on a cluster, a group per hash slot of their
    keys (a script's keys must share a slot there)."""
    if not items:
        return []
    if not isinstance(redis, RedisCluster):
        return [list(range(len(items)))]
    groups: dict[int, list[int]] = {}
    for n, item in enumerate(items):
        groups.setdefault(key_slot(key_of(item).encode()), []).append(n)
    return list(groups.values())


def per_item(splits: Sequence[Split], results: Sequence[Any], count: int) -> list[Any]:
    """The results of split calls, back in their items' places; a call's exception (or
    single result) is each of its items'."""
    out: list[Any] = [None] * count
    for split, result in zip(splits, results, strict=True):
        if isinstance(result, list):
            for n, one in zip(split.items, result, strict=True):
                out[n] = one
        else:
            for n in split.items:
                out[n] = result
    return out


# The script's body becomes a function whose parameters shadow KEYS and ARGV, run once
# per call. ARGV[1] is the calls, MessagePack: per call, its keys' places in KEYS (each
# key is given once) and its arguments, numbers turned into text as Redis would pass them.
_BATCHED: Final = """
local function one(KEYS, ARGV)
%s
end
local out = {}
for i, call in ipairs(cmsgpack.unpack(ARGV[1])) do
  local keys, args = {}, {}
  for j, k in ipairs(call[1]) do keys[j] = KEYS[k] end
  for j, a in ipairs(call[2]) do
    if type(a) == 'number' then
      a = a == math.floor(a) and string.format('%%d', a) or tostring(a)
    end
    args[j] = a
  end
  out[i] = one(keys, args) or false
end
return out
"""
_pack: Final = msgspec.msgpack.Encoder().encode
T = TypeVar("T")


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


class _BatchOp(msgspec.Struct):
    """The calls of one script, as one call of its batched form (a call alone goes as it
    is: a script that loops over a batch's items itself is called once a batch)."""

    script: AsyncScript
    calls: list[int] = msgspec.field(default_factory=list)
    first: Call | None = None  # the one call, sent as it is when it stays alone
    keys: dict[Any, int] = msgspec.field(default_factory=dict)  # key -> its place, from 1
    packed: list[tuple[list[int], Sequence[Any]]] = msgspec.field(default_factory=list)

    def add(self, n: int, call: Call) -> bool:
        """Take the call in, unless an argument is bytes that are not text (Redis' Lua
        MessagePack has no binary type)."""
        if self.first is None:
            self.first = call
            self.calls.append(n)
            return True
        if not self.packed and not self._pack(self.first):
            return False  # the first stays alone (see op), and so does each after it
        if not self._pack(call):
            return False
        self.calls.append(n)
        return True

    def _pack(self, call: Call) -> bool:
        args = call.args
        if bytes in map(type, args):
            try:
                args = [arg.decode() if isinstance(arg, bytes) else arg for arg in args]
            except UnicodeDecodeError:
                return False
        keys = self.keys
        places = [keys.setdefault(key, len(keys) + 1) for key in call.keys]
        self.packed.append((places, args))
        return True

    def op(self) -> _Op:
        if len(self.calls) == 1 and self.first is not None:
            return _Op(self.script, list(self.first.keys), list(self.first.args), self.calls)
        batched = _batched.get(self.script.sha)
        if batched is None:
            batched = _batched[self.script.sha] = _Batched(self.script.script)
        return _Op(batched, list(self.keys), [_pack(self.packed)], self.calls)


async def run(redis: Redis, calls: Sequence[Call], wait: Wait | None = None) -> list[Any]:
    """Every call in one non-transactional pipeline; a result or an exception per call.

    The calls of one script run in their order; calls of different scripts and commands
    may run in any order (a script the server had lost runs after the rest), so give one
    batch only calls that touch different keys, or the same keys through one script.
    """
    if not calls:
        return []
    if isinstance(redis, RedisCluster):
        return await _on_cluster(redis, calls)
    ops = _plan(calls)
    replies = await _reloading(redis, ops, lambda some: _execute(redis, some, wait))
    results: list[Any] = [None] * len(calls)
    for op, reply in zip(ops, replies, strict=True):
        if not isinstance(op.script, _Batched) or isinstance(reply, Exception):
            for n in op.calls:
                results[n] = reply
        else:
            for n, result in zip(op.calls, reply, strict=True):
                results[n] = result
    return results


def _plan(calls: Sequence[Call]) -> list[_Op]:
    ops: list[_Op | _BatchOp] = []
    grouped: dict[int, _BatchOp] = {}
    for n, call in enumerate(calls):
        script = call.script
        if script is None:
            ops.append(_Op(script, list(call.keys), list(call.args), [n]))
            continue
        op = grouped.get(id(script))
        if op is None:
            op = grouped[id(script)] = _BatchOp(script)
            ops.append(op)
        if not op.add(n, call):
            ops.append(_Op(script, list(call.keys), list(call.args), [n]))
    return [
        op.op() if isinstance(op, _BatchOp) else op
        for op in ops
        if not isinstance(op, _BatchOp) or op.calls
    ]


async def _execute(redis: Redis, ops: Sequence[_Op], wait: Wait | None) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for op in ops:
            if op.script is None:
                pipe.execute_command(*op.args)
            else:
                pipe.evalsha(op.script.sha, len(op.keys), *op.keys, *op.args)
        if wait is None:
            return list(await pipe.execute(raise_on_error=False))
        pipe.execute_command(*wait.command())
        *replies, confirmed = await pipe.execute(raise_on_error=False)
    confirm(confirmed, wait, "alert records")
    return replies


async def _on_cluster(redis: RedisCluster, calls: Sequence[Call]) -> list[Any]:
    """On a cluster: every call in one cluster pipeline, which sends each node its calls in
    one round trip, the nodes side by side (a call's keys share a slot)."""
    return await _reloading(redis, calls, lambda some: _cluster_pipeline(redis, some))


_Scripted = TypeVar("_Scripted", Call, _Op)


async def _reloading(
    redis: Redis | RedisCluster,
    items: Sequence[_Scripted],
    send: Callable[[Sequence[_Scripted]], Awaitable[list[Any]]],
) -> list[Any]:
    """`send(items)`; a server that lost its scripts (restarted, SCRIPT FLUSH) ran none of
    those: load them and send just those items again."""
    replies = await send(items)
    missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        scripts = {id(s): s for n in missing if (s := items[n].script) is not None}
        for script in scripts.values():
            script.sha = await redis.script_load(script.script)
        again = await send([items[n] for n in missing])
        for n, reply in zip(missing, again, strict=True):
            replies[n] = reply
    return replies


async def _cluster_pipeline(redis: RedisCluster, calls: Sequence[Call]) -> list[Any]:
    async with redis.pipeline() as pipe:
        for call in calls:
            if call.script is None:
                pipe.execute_command(*call.args)
            else:
                pipe.execute_command(
                    "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                )
        return list(await pipe.execute(raise_on_error=False))
