"""Run a benchmark by module name: ``python -m bench sdk_import [args...]``; no name lists them."""

from __future__ import annotations

import pkgutil
import runpy
import sys

import bench


def main() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name != "__main__")
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print("usage: python -m bench NAME [args...]; benchmarks:", ", ".join(names))
        raise SystemExit(2)
    name = sys.argv[1]
    sys.argv = [f"bench.{name}", *sys.argv[2:]]
    runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
