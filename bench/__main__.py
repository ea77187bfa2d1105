"""``python -m bench [all] [--quick] ...`` runs everything (see `bench.run_all`);
``python -m bench NAME [args...]`` runs one benchmark module."""

from __future__ import annotations

import pkgutil
import runpy
import sys

import bench


def main() -> None:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )
    args = sys.argv[1:]
    if not args or args[0] == "all" or args[0].startswith("-"):
        from bench.run_all import main as run_all

        rest = args[1:] if args and args[0] == "all" else args
        if rest[:1] in (["-h"], ["--help"]):
            print("one benchmark: python -m bench NAME [args...]; benchmarks:", ", ".join(names))
        raise SystemExit(run_all(rest))
    if args[0] not in names:
        print("usage: python -m bench [all] [--quick] | python -m bench NAME [args...]")
        print("benchmarks:", ", ".join(names))
        raise SystemExit(2)
    sys.argv = [f"bench.{args[0]}", *args[1:]]
    runpy.run_module(f"bench.{args[0]}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
