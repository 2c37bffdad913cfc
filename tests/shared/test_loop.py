"""The receiver and the worker run on uvloop where it is installed, the collector settled."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.loop import loop_name, run


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """`run` settles the collector for the whole process: this one's is put back."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector_restored")
def test_run_uses_uvloop() -> None:
    async def which() -> tuple[str, str]:
        return loop_name(), type(asyncio.get_running_loop()).__module__

    name, module = run(which())
    assert name == "uvloop"
    assert module.startswith("uvloop")


async def test_the_default_loop_is_named_asyncio() -> None:
    assert loop_name() == "asyncio"


def _printed_by_a_process_of_its_own(probe: str) -> list[str]:
    """The words `probe` prints: the collector's settings and the signal handlers are
    the whole process's, so each probe has a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_run_takes_what_is_loaded_out_of_the_collectors_passes() -> None:
    probe = (
        "import gc\n"
        "from shared.loop import YOUNG_COLLECTION_EVERY, run\n"
        "async def settings():\n"
        "    return gc.get_freeze_count(), gc.get_threshold()[0], YOUNG_COLLECTION_EVERY\n"
        "print(*run(settings()))\n"
    )
    frozen, young, expected = map(int, _printed_by_a_process_of_its_own(probe))
    # The modules' functions, classes and constants: tens of thousands of objects.
    assert frozen > 10_000
    assert young == expected > 700  # the default: a collection every 700 allocations


def test_run_leaves_stop_signals_alone_when_the_program_goes_on() -> None:
    # A bench runs the alerts one, then starts servers that must still stop on SIGTERM.
    probe = (
        "import signal\n"
        "from shared.loop import run\n"
        "async def nothing():\n"
        "    return None\n"
        "run(nothing(), program_ends=False)\n"
        "after = signal.getsignal(signal.SIGTERM)\n"
        "run(nothing())\n"
        "print(after == signal.SIG_DFL, signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)\n"
    )
    assert _printed_by_a_process_of_its_own(probe) == ["True", "True"]
