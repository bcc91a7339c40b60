"""``python -m bench [ARGS]``: run every benchmark module in turn, each printing its tables.

A benchmark is any ``bench/<name>.py`` without a leading underscore that defines
``main(argv) -> int``; they run in name order and the exit code is the worst one.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["benchmarks", "main"]


def benchmarks() -> list[tuple[str, Callable[[list[str]], int]]]:
    """(name, main) of every benchmark module, sorted by name."""
    found: list[tuple[str, Callable[[list[str]], int]]] = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"bench.{info.name}")
        entry = getattr(module, "main", None)
        if callable(entry):
            found.append((info.name, entry))
    return found


def main(argv: list[str] | None = None) -> int:
    """Run all benchmarks with the same arguments; the worst exit code wins."""
    args = sys.argv[1:] if argv is None else argv
    worst = 0
    for name, entry in benchmarks():
        print(f"== bench.{name} {' '.join(args)}".rstrip(), flush=True)
        started = time.monotonic()
        code = entry(list(args))
        print(f"== bench.{name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
