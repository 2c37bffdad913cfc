"""The consumer API: declaring, loading and the errors a plugin author sees."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.events import Event, Rejected, Stopped
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import group_info, running
from worker.consumers import (
    Consumer,
    ConsumerLoadError,
    Context,
    SetupContext,
    consumer,
    load_consumer,
    load_consumers,
)
from worker.runtime import Worker


async def _noop(event: Event, ctx: Context) -> None:
    return None


def test_a_bare_decorator_names_the_consumer_after_the_function() -> None:
    @consumer
    async def billing(event: Event, ctx: Context) -> None:
        return None

    assert isinstance(billing, Consumer)
    assert billing.name == "billing"
    assert billing.event_types is None  # every type


def test_event_types_restrict_what_a_consumer_wants() -> None:
    failures = consumer("failures", events=[Stopped, Rejected])(_noop)
    assert failures.event_types == {"realTimeTranscriptionStopped", "realTimeTranscriptionRejected"}
    assert "realTimeTranscriptionAvailable" not in failures.event_types


def test_a_class_consumer_may_be_given_as_an_instance_with_arguments() -> None:
    class Fetcher:
        def __init__(self, retries: int) -> None:
            self.retries = retries

        async def handle(self, event: Event, ctx: Context) -> None:
            return None

        async def teardown(self) -> None:
            return None

    made = consumer("fetcher")(Fetcher(retries=3))
    assert made.handle.__self__.retries == 3  # type: ignore[attr-defined]
    assert made.teardown is not None
    assert made.setup is None


def test_declaration_mistakes_are_named() -> None:
    def not_async(event: Event, ctx: Context) -> None:
        return None

    with pytest.raises(TypeError, match=r"'sync'.*async def"):
        consumer("sync")(not_async)
    with pytest.raises(ValueError, match="'has space'"):
        consumer("has space")(_noop)


def test_load_errors_say_which_consumer_and_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugin_broken.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "plugin_plain.py").write_text("async def handler(event, ctx):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {
        "no_colon": "expected the form pkg.module:name",
        "plugin_missing_module:x": "cannot import plugin_missing_module",
        "plugin_broken:x": "boom at import",
        "plugin_plain:nothing": "plugin_plain has no 'nothing'",
        "plugin_plain:handler": "function is not a consumer; decorate it",
    }
    for spec, expected in cases.items():
        with pytest.raises(ConsumerLoadError) as caught:
            load_consumer(spec)
        assert f"consumer {spec!r}" in str(caught.value)
        assert expected in str(caught.value)
    sys.modules.pop("plugin_plain", None)


def test_two_consumers_may_not_share_a_name() -> None:
    first = consumer("same")(_noop)

    async def other(event: Event, ctx: Context) -> None:
        return None

    second = consumer("same")(other)
    with pytest.raises(ConsumerLoadError, match="two consumers are named 'same'"):
        load_consumers([], builtin=[first, second], use_entry_points=False)


async def test_setup_runs_before_and_teardown_after_handling(
    settings: Settings, redis: Redis
) -> None:
    calls: list[str] = []

    @consumer("lifecycle")
    class Lifecycle:
        async def setup(self, ctx: SetupContext) -> None:
            calls.append(f"setup:{ctx.keys.prefix == settings.key_prefix}")

        async def handle(self, event: Event, ctx: Context) -> None:
            calls.append("handle")

        async def teardown(self) -> None:
            calls.append("teardown")

    stream = Keys(settings.key_prefix).events()
    async with running(settings, redis, [Lifecycle]):

        async def handled() -> bool:
            info = await group_info(redis, stream, "lifecycle")
            return bool(info) and info["pending"] == 0 and info["entries-read"] == 1

        await add_events(redis, settings, *sample_bodies(1))
        await eventually(handled)
    assert calls == ["setup:True", "handle", "teardown"]


async def test_a_failing_setup_stops_the_worker_naming_the_consumer(
    settings: Settings, redis: Redis, logs: LogLines
) -> None:
    torn_down: list[str] = []

    @consumer("fine")
    class Fine:
        async def handle(self, event: Event, ctx: Context) -> None:
            return None

        async def teardown(self) -> None:
            torn_down.append("fine")

    @consumer("needs_db")
    class NeedsDb:
        async def setup(self, ctx: SetupContext) -> None:
            raise ConnectionRefusedError("db down")

        async def handle(self, event: Event, ctx: Context) -> None:
            return None

    worker = Worker(settings, redis, [Fine, NeedsDb])
    with pytest.raises(ConnectionRefusedError):
        await worker.run()
    [line] = logs.named("consumer_setup_failed")
    assert line["consumer"] == "needs_db"
    assert "db down" in line["error"]
    assert torn_down == ["fine"]  # what was set up is torn down
