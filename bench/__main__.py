"""`python -m bench [name ...] [options]`: run the named benchmarks (default: all of them).

Options after the names go to each benchmark named: `python -m bench receiver --rounds 5`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

# Minutes long: run only when named (`python -m bench memory`).
_ON_REQUEST = {"consumer_instructions", "instructions", "memory", "scaling"}


def _available() -> list[str]:
    here = Path(__file__).parent
    names = (m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    return sorted(name for name in names if name not in _ON_REQUEST)


def main(argv: list[str]) -> int:
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:split] or _available(), argv[split:]
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name} ==", flush=True)
        code = int(module.main(options))
        if code:
            return code
    return 0


raise SystemExit(main(sys.argv[1:]))
