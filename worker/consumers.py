"""The consumer plugin API: what a consumer author writes, sees and gets.

A consumer is an async function (or a class with `setup`, `handle`, `teardown`) declared
with `@consumer(...)`. The decorator returns a value and registers nothing; the worker
loads consumers from `--consumer pkg.module:name` and the `rtt_events.consumers` entry
points into one list, checked once at start-up.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar, overload

import msgspec
from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "Consumer",
    "ConsumerLoadError",
    "Context",
    "SetupContext",
    "consumer",
    "load_consumer",
    "load_consumers",
]

ENTRY_POINT_GROUP = "rtt_events.consumers"


@dataclass(frozen=True, slots=True)
class SetupContext:
    """What `setup` gets: shared resources, once per worker process."""

    redis: Redis
    settings: Settings
    keys: Keys
    log: FilteringBoundLogger


class Context(msgspec.Struct, frozen=True):
    """What a handler gets with each event.

    A msgspec Struct rather than a dataclass: one is built per entry, and a frozen
    dataclass costs ten times as much to build as a no-op handler takes to run.
    """

    log: FilteringBoundLogger  # bound with call_id, transcription_id, stream_id
    redis: Redis
    settings: Settings
    keys: Keys
    deliveries: int  # 1 on the first delivery, more on retries and reclaims
    entry_id: str
    stream: str
    received_at_ms: int


Handler = Callable[[Event, Context], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Consumer:
    """A named handler; its consumer group has its name, so it sees every event."""

    name: str
    handle: Handler
    event_types: frozenset[str] | None = None  # None: every type
    setup: Callable[[SetupContext], Awaitable[None]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None

    def wants(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types


class _ConsumerClass(Protocol):
    async def handle(self, event: Any, ctx: Context) -> None: ...


F = TypeVar("F", bound=Callable[..., Awaitable[None]])


@overload
def consumer(
    name: str, *, events: Iterable[type[Event]] | None = None
) -> Callable[[Any], Consumer]: ...
@overload
def consumer(name: Callable[..., Awaitable[None]]) -> Consumer: ...


def consumer(name: Any = None, *, events: Iterable[type[Event]] | None = None) -> Any:
    """Declare a consumer: `@consumer("billing", events=[Stopped])` over a function or class.

    Used bare (`@consumer`), the consumer takes the function's name. A class is built with
    no arguments; to pass some, apply it to an instance: `consumer("x")(Fetcher(retries=3))`.
    """
    if callable(name) and not isinstance(name, str):
        return _build(name, getattr(name, "__name__", type(name).__name__), None)

    def wrap(target: Any) -> Consumer:
        return _build(target, name or target.__name__, events)

    return wrap


def _build(target: Any, name: str, events: Iterable[type[Event]] | None) -> Consumer:
    types = frozenset(str(cls.__struct_config__.tag) for cls in events) if events else None
    if not name or any(ch in name for ch in " :{}"):
        raise ValueError(f"consumer name {name!r}: use letters, digits, '-', '_' or '.'")
    if isinstance(target, type) or _is_instance(target):
        instance: _ConsumerClass = target() if isinstance(target, type) else target
        if not inspect.iscoroutinefunction(instance.handle):
            raise TypeError(f"consumer {name!r}: handle must be `async def handle(event, ctx)`")
        return Consumer(
            name=name,
            handle=instance.handle,
            event_types=types,
            setup=getattr(instance, "setup", None),
            teardown=getattr(instance, "teardown", None),
        )
    if not inspect.iscoroutinefunction(target):
        raise TypeError(f"consumer {name!r}: {target!r} must be `async def f(event, ctx)`")
    return Consumer(name=name, handle=target, event_types=types)


def _is_instance(target: Any) -> bool:
    """An object with a `handle` method: a class consumer built with its own arguments."""
    return not inspect.isroutine(target) and callable(getattr(target, "handle", None))


class ConsumerLoadError(Exception):
    """A consumer could not be loaded: the message says which one and what failed."""


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
