"""The consumer plugin API: what a consumer author writes, sees and gets.

A consumer is an async function (or a class with `setup`, `handle`, `teardown`) declared
with `@consumer(...)`. The decorator returns a value and registers nothing; the worker
loads consumers from `--consumer pkg.module:name` and the `rtt_events.consumers` entry
points into one list, checked once at start-up.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, TypeVar, get_args, overload

import msgspec
from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "BatchHandler",
    "Consumer",
    "ConsumerLoadError",
    "ConsumerOptions",
    "Context",
    "SetupContext",
    "Start",
    "consumer",
    "load_consumer",
    "load_consumers",
    "resolve_options",
]

ENTRY_POINT_GROUP = "rtt_events.consumers"

# Where a new consumer group starts: the oldest entry still kept, or what comes next.
Start = Literal["oldest", "new"]


class ConsumerOptions(msgspec.Struct, frozen=True):
    """How the worker runs a consumer: the decorator's options, else the settings'."""

    timeout_s: float  # a call running longer is cancelled, and counts as a failure
    concurrency: int  # calls at once, per worker process
    max_deliveries: int  # deliveries before the entry is dead-lettered
    start: Start  # where its group starts, when the worker creates it


@dataclass(frozen=True, slots=True)
class SetupContext:
    """What `setup` gets, once per worker process: what the consumer needs, and nothing
    of the other components' settings (credentials of the receiver or the alert sinks)."""

    redis: Redis
    keys: Keys
    key_prefix: str
    consumer: str  # its name, which is its group's name
    worker_id: str
    options: ConsumerOptions
    log: FilteringBoundLogger  # bound with consumer and worker_id


class Context(msgspec.Struct, frozen=True):
    """What a handler gets with each event.

    A msgspec Struct rather than a dataclass: one is built per entry, and a frozen
    dataclass costs ten times as much to build as a no-op handler takes to run.
    """

    log: FilteringBoundLogger  # bound with call_id, transcription_id, stream_id
    redis: Redis
    keys: Keys
    key_prefix: str
    consumer: str
    worker_id: str
    options: ConsumerOptions
    deliveries: int  # 1 on the first delivery, more on retries and reclaims
    entry_id: str
    stream: str
    received_at_ms: int


Handler = Callable[[Event, Context], Awaitable[None]]
# A batch consumer's handler: the events of one read and their contexts, index for index.
# It returns None when every event is done, or one outcome per event: None for done, an
# exception for an event that failed (retried, then dead-lettered, like a raise).
BatchHandler = Callable[
    [Sequence[Event], Sequence[Context]], Awaitable[Sequence[BaseException | None] | None]
]


@dataclass(frozen=True, slots=True)
class Consumer:
    """A named handler; its consumer group has its name, so it sees every event.

    A batch consumer has `handle_batch`, which the worker calls with many events at once;
    its `handle` runs `handle_batch` on one event, for callers that have only one.
    """

    name: str
    handle: Handler
    event_types: frozenset[str] | None = None  # None: every type
    setup: Callable[[SetupContext], Awaitable[None]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None
    # None: from the settings (RTT_HANDLER_TIMEOUT, RTT_CONCURRENCY, RTT_MAX_DELIVERIES)
    timeout_s: float | None = None
    concurrency: int | None = None
    max_deliveries: int | None = None
    start: Start = "oldest"
    handle_batch: BatchHandler | None = None


class _ConsumerClass(Protocol):
    async def handle(self, event: Any, ctx: Any) -> Any: ...


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@overload
def consumer(
    name: str,
    *,
    events: Iterable[type[Event]] | None = None,
    timeout: float | timedelta | None = None,
    concurrency: int | None = None,
    max_deliveries: int | None = None,
    start: Start = "oldest",
    batch: bool = False,
) -> Callable[[Any], Consumer]: ...
@overload
def consumer(name: Callable[..., Awaitable[None]]) -> Consumer: ...


def consumer(
    name: Any = None,
    *,
    events: Iterable[type[Event]] | None = None,
    timeout: float | timedelta | None = None,
    concurrency: int | None = None,
    max_deliveries: int | None = None,
    start: Start = "oldest",
    batch: bool = False,
) -> Any:
    """Declare a consumer: `@consumer("billing", events=[Stopped])` over a function or class.

    Used bare (`@consumer`), the consumer takes the function's name. A class is built with
    no arguments; to pass some, apply it to an instance: `consumer("x")(Fetcher(retries=3))`.
    `timeout` (seconds or a timedelta), `concurrency` and `max_deliveries` default to
    RTT_HANDLER_TIMEOUT, RTT_CONCURRENCY and RTT_MAX_DELIVERIES; `start="new"` makes a new
    consumer's group start with the events that come next instead of the oldest kept one.
    With `batch=True` the handler takes the events of a read at once, `(events, ctxs)`, and
    returns None or one outcome per event (see `BatchHandler`): it can do one Redis round
    trip for all of them.
    """
    if callable(name) and not isinstance(name, str):
        return _build(name, getattr(name, "__name__", type(name).__name__), None, {})

    def wrap(target: Any) -> Consumer:
        label = name or target.__name__
        timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        options = {
            "timeout_s": timeout_s,
            "concurrency": concurrency,
            "max_deliveries": max_deliveries,
            "start": start,
        }
        return _build(target, label, events, _checked(label, options), batch=batch)

    return wrap


def _checked(name: str, options: dict[str, Any]) -> dict[str, Any]:
    timeout_s, start = options["timeout_s"], options["start"]
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"consumer {name!r}: timeout must be more than 0, got {timeout_s!r}")
    for option in ("concurrency", "max_deliveries"):
        value = options[option]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"consumer {name!r}: {option} must be 1 or more, got {value!r}")
    if start not in get_args(Start):
        raise ValueError(f"consumer {name!r}: start must be 'oldest' or 'new', got {start!r}")
    return options


def _build(
    target: Any,
    name: str,
    events: Iterable[type[Event]] | None,
    options: dict[str, Any],
    *,
    batch: bool = False,
) -> Consumer:
    types = frozenset(str(cls.__struct_config__.tag) for cls in events) if events else None
    if not name or any(ch in name for ch in " :{}"):
        raise ValueError(f"consumer name {name!r}: use letters, digits, '-', '_' or '.'")
    args = "events, ctxs" if batch else "event, ctx"
    extra: dict[str, Any] = {}
    if isinstance(target, type) or _is_instance(target):
        instance: _ConsumerClass = target() if isinstance(target, type) else target
        if not inspect.iscoroutinefunction(instance.handle):
            raise TypeError(f"consumer {name!r}: handle must be `async def handle({args})`")
        handle: Any = instance.handle
        extra = {
            "setup": getattr(instance, "setup", None),
            "teardown": getattr(instance, "teardown", None),
        }
    elif not inspect.iscoroutinefunction(target):
        raise TypeError(f"consumer {name!r}: {target!r} must be `async def f({args})`")
    else:
        handle = target
    if batch:
        extra["handle_batch"] = handle
        handle = _one_of_batch(handle)
    return Consumer(name=name, handle=handle, event_types=types, **extra, **options)


def _one_of_batch(handle_batch: BatchHandler) -> Handler:
    """A batch handler as a per-event one: the event's outcome, raised if it failed."""

    async def handle(event: Event, ctx: Context) -> None:
        outcomes = await handle_batch([event], [ctx])
        if outcomes is not None and outcomes[0] is not None:
            raise outcomes[0]

    return handle


def _is_instance(target: Any) -> bool:
    """An object with a `handle` method: a class consumer built with its own arguments."""
    return not inspect.isroutine(target) and callable(getattr(target, "handle", None))


class ConsumerLoadError(Exception):
    """A consumer could not be loaded: the message says which one and what failed."""


def resolve_options(item: Consumer, settings: Settings) -> ConsumerOptions:
    """The consumer's options, with the settings' defaults; checked against claim_idle."""
    timeout_s = item.timeout_s
    source = ""
    if timeout_s is None:
        timeout_s, source = settings.handler_timeout.total_seconds(), " (RTT_HANDLER_TIMEOUT)"
    claim_idle_s = settings.claim_idle.total_seconds()
    if timeout_s >= claim_idle_s:
        raise ConsumerLoadError(
            f"consumer {item.name!r}: timeout {timeout_s:g}s{source} must be shorter than "
            f"RTT_CLAIM_IDLE ({claim_idle_s:g}s): past it, other workers take over the entry "
            "of a handler still running"
        )
    return ConsumerOptions(
        timeout_s=timeout_s,
        concurrency=item.concurrency or settings.concurrency,
        max_deliveries=item.max_deliveries or settings.max_deliveries,
        start=item.start,
    )


def load_consumer(spec: str) -> Consumer:
    """Load `pkg.module:attr`, which must be a Consumer (made with `@consumer`)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConsumerLoadError(f"consumer {spec!r}: expected the form pkg.module:name")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConsumerLoadError(f"consumer {spec!r}: cannot import {module_name}: {exc!r}") from exc
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise ConsumerLoadError(f"consumer {spec!r}: {module_name} has no {attr!r}") from None
    if not isinstance(value, Consumer):
        raise ConsumerLoadError(
            f"consumer {spec!r}: {type(value).__name__} is not a consumer; decorate it with "
            "@worker.consumer(...)"
        )
    return value


def load_consumers(
    specs: Iterable[str], builtin: Iterable[Consumer] = (), *, use_entry_points: bool = True
) -> list[Consumer]:
    """Built-ins, entry points and `--consumer` specs as one list; names must be unique."""
    loaded = list(builtin)
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                value = ep.load()
            except Exception as exc:
                raise ConsumerLoadError(
                    f"entry point {ep.name!r} ({ep.value}): cannot load: {exc!r}"
                ) from exc
            if not isinstance(value, Consumer):
                raise ConsumerLoadError(
                    f"entry point {ep.name!r} ({ep.value}): "
                    f"{type(value).__name__} is not a consumer"
                )
            loaded.append(value)
    loaded.extend(load_consumer(spec) for spec in specs)
    seen: dict[str, Consumer] = {}
    for item in loaded:
        if item.name in seen and seen[item.name] is not item:
            raise ConsumerLoadError(f"two consumers are named {item.name!r}; names must be unique")
        seen[item.name] = item
    return list(seen.values())
