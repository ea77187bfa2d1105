"""What importing each SDK costs: wall time and RSS in fresh processes, as figures.

Median over ``--runs`` fresh interpreters, interleaved, of ``import osimage.image.v1.image``,
``from openstack.image.v1 import image`` and ``import glanceclient.v1.client`` (the
statements of `bench.sdk_import`). RSS is the child's own VmHWM from /proc, above a bare
interpreter's (``ru_maxrss`` would carry the parent's peak across exec). Target:
osimage's import time at most 1/5 of openstacksdk's.

    .venv/bin/python -m bench imports [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from dataclasses import dataclass

from bench._support import Figure, add_json_argument, judged, print_table, write_figures
from bench.sdk_import import IMPORTS

_CHILD = """
import sys, time
start = time.perf_counter()
exec(sys.argv[1])
elapsed = time.perf_counter() - start
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(elapsed, hwm, len(sys.modules))
"""


@dataclass
class ImportCost:
    seconds: float
    rss_kib: int
    modules: int


def measure(statements: dict[str, str], runs: int) -> dict[str, ImportCost]:
    """Median time, peak RSS and module count of each statement in fresh interpreters."""
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in statements}
    for _ in range(runs):
        for name, statement in statements.items():
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, statement],
                check=True, capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            samples[name].append((float(out[0]), int(out[1]), int(out[2])))
    return {
        name: ImportCost(
            statistics.median(s[0] for s in got),
            int(statistics.median(s[1] for s in got)),
            int(statistics.median(s[2] for s in got)),
        )
        for name, got in samples.items()
    }


SECTION = "SDK import"
TARGET = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench imports", description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    add_json_argument(parser)
    args = parser.parse_args(argv)

    costs = measure({"bare": "pass", **IMPORTS}, args.runs)
    bare = costs.pop("bare")
    ours, theirs = costs["osimage"], costs["openstacksdk"]
    rss = {name: (cost.rss_kib - bare.rss_kib) / 1024 for name, cost in costs.items()}
    figures: list[Figure] = [
        judged(
            SECTION,
            "import osimage.image.v1.image: time",
            ours.seconds * 1000,
            "ms",
            baseline="openstacksdk",
            baseline_value=theirs.seconds * 1000,
            ratio=ours.seconds / theirs.seconds,
            limit=TARGET,
            higher_is_better=False,
            target=f"<= {TARGET:g}x openstacksdk's",
            note=f"median of {args.runs} fresh processes; {ours.modules - bare.modules} modules",
        ),
        judged(
            SECTION,
            "import osimage.image.v1.image: RSS above bare python",
            rss["osimage"],
            "MiB",
            baseline="openstacksdk",
            baseline_value=rss["openstacksdk"],
            ratio=rss["osimage"] / rss["openstacksdk"],
            target="(reported; ratio = osimage / openstacksdk)",
        ),
    ]
    for name in ("openstacksdk", "glanceclient"):
        figures.append(
            judged(
                SECTION,
                f"{name}: time (RSS {rss[name]:.1f} MiB)",
                costs[name].seconds * 1000,
                "ms",
                note=f"{costs[name].modules - bare.modules} modules",
            )
        )
    print_table(figures, f"Import cost, median of {args.runs} fresh processes")
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
