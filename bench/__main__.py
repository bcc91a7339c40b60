"""``python -m bench [NAME ...] [ARGS]``: run benchmark modules in turn, each printing its
tables: the NAMEs given (leading arguments that name a benchmark), else every one.

A benchmark is any ``bench/<name>.py`` without a leading underscore that defines
``main(argv) -> int``; they run in name order and the exit code is the worst one. ARGS (e.g.
``--quick``) go to each benchmark; ``python -m bench.<name> --help`` lists one's options.
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
    """Run the named (or all) benchmarks with the same arguments; the worst exit code wins."""
    args = sys.argv[1:] if argv is None else argv
    found = benchmarks()
    names = {name for name, _ in found}
    chosen: set[str] = set()
    while args and args[0] in names:
        chosen.add(args[0])
        args = args[1:]
    worst = 0
    for name, entry in found:
        if chosen and name not in chosen:
            continue
        print(f"== bench.{name} {' '.join(args)}".rstrip(), flush=True)
        started = time.monotonic()
        code = entry(list(args))
        print(f"== bench.{name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
