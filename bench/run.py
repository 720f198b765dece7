"""Run benchmarks: ``python bench/run.py [AREA ...]`` (all areas when none given).

Each area is a module ``bench/bench_<area>.py`` with a ``main() -> None`` that
prints its results and says which BENCHMARKS.md section they belong in.
Benchmarks are run on demand, never by the test suite.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    areas = argv or available()
    unknown = sorted(set(areas) - set(available()))
    if unknown:
        print(
            f"unknown benchmark area(s): {', '.join(unknown)}; choose from: "
            f"{', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(HERE))
    for area in areas:
        print(f"== {area}", flush=True)
        importlib.import_module(f"bench_{area}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
