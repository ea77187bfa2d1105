"""Run every benchmark, print one table of figures with their targets, and write JSON.

Each benchmark runs as its own process (``python -m bench.<name> --json ...``) so that
RSS and imports of one never colour another. Results go to ``bench/results/`` (ignored
by git): ``latest.json`` (machine, figures, timings), ``latest.md`` (the table as
Markdown) and ``run.log`` (everything printed).

    .venv/bin/python -m bench              # everything (the default run, < 15 min on 2 cores)
    .venv/bin/python -m bench --quick      # smaller catalogues and files, a couple of minutes
    .venv/bin/python -m bench --big        # also 6 GiB through a Swift or S3 store
    .venv/bin/python -m bench --only big   # only that
    .venv/bin/python -m bench --only transfer,find

``--big`` needs a store: ``--big-store swift://bench-big`` with the OSIMAGE_SWIFT_*
variables set (or swift-aio's ST_* exports: ``e=$(shared/services/swift-aio start);
eval "$e"``), or an ``s3://`` URL with the AWS_* variables (see docs/stores.md). It
uploads once (``upload_image``) and downloads once.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench._support import (
    Figure,
    judged,
    machine,
    markdown_table,
    print_table,
    read_figures,
    run_module,
)

RESULTS = Path(__file__).with_name("results")

# name -> (arguments of the default run, arguments of --quick); the request-rate
# benchmarks run before the ones that write gigabytes (see `settle`)
SUITE: dict[str, tuple[list[str], list[str]]] = {
    "imports": (["--runs", "7"], ["--runs", "3"]),
    "list_catalogue": (["--images", "10000", "--runs", "3"], ["--images", "2000", "--runs", "1"]),
    "find": (["--images", "10000", "--reps", "30"], ["--images", "2000", "--reps", "10"]),
    "server_rate": (
        ["--images", "10000", "--seconds", "5", "--rounds", "2"],
        ["--images", "2000", "--seconds", "2", "--rounds", "1"],
    ),
    "v2_rate": (
        ["--images", "10000", "--seconds", "5", "--rounds", "2"],
        ["--images", "2000", "--seconds", "2", "--rounds", "1"],
    ),
    "page_growth": (
        ["--sizes", "1000,10000,100000", "--requests", "200"],
        ["--sizes", "1000,10000", "--requests", "50"],
    ),
    "transfer": (["--size-gib", "2"], ["--size-gib", "0.25"]),
    "cache": (["--size-gib", "1"], ["--size-gib", "0.25", "--concurrent-mib", "64"]),
    "hostile": (["--seconds", "60"], ["--seconds", "20", "--quiet-seconds", "10"]),
    # issue 14: Glance itself (installed into bench/results/glance-peer/ on first use)
    "glance_peer": ([], ["--quick"]),
}

# benchmarks written for other issues; they print their own numbers and we record
# whether they succeeded (keystone_head only when a Keystone is configured)
EXTRAS: dict[str, list[str]] = {
    "sdk_import": ["--skip-imports"],
    "cli_transfer": ["--size-mib", "1024"],
    "keystone_head": [],
    "operations": [],  # issue 15: /healthcheck and /metrics against a HEAD
}


def settle() -> None:
    """Write out what the last benchmark left in the page cache before the next starts:
    after `transfer`'s gigabytes the kernel's writeback otherwise runs during the next
    benchmark's measurements (the load average rose from about 1.3 to 2.5)."""
    os.sync()
    time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument("--only", help="comma-separated benchmarks to run (default: all)")
    parser.add_argument("--no-extras", action="store_true", help="skip the other issues' ones")
    parser.add_argument("--big", action="store_true", help="add the 6 GiB Swift/S3 transfer")
    parser.add_argument("--big-store", default=os.environ.get("BENCH_BIG_STORE", ""))
    parser.add_argument("--big-gib", default="6")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    wanted = set(args.only.split(",")) if args.only else None
    if wanted and "big" in wanted:
        args.big = True
    plan: list[tuple[str, str, list[str]]] = []  # (label, module, arguments)
    for name, (full, quick) in SUITE.items():
        if wanted is None or name in wanted:
            plan.append((name, name, quick if args.quick else full))
    if not args.no_extras and not args.quick:
        for name, extra in EXTRAS.items():
            if wanted is not None and name not in wanted:
                continue
            if name == "keystone_head" and not os.environ.get("OSIMAGE_KEYSTONE_AUTH_URL"):
                print("skipping keystone_head: no OSIMAGE_KEYSTONE_AUTH_URL (see its docstring)")
                continue
            plan.append((name, name, extra))
    if args.big:
        if not args.big_store:
            raise SystemExit("--big needs --big-store swift://... or s3://... (docs/stores.md)")
        store = ["--store", args.big_store]
        big = ["--size-gib", args.big_gib, *store, "--skip-two-pass", "--runs", "2"]
        plan.append(("transfer (big)", "transfer", big))

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "run.log"
    log.write_text("")
    about = machine()
    print(f"machine: {about}")
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="osimage-bench-json-") as tmp:
        for n, (label, module, arguments) in enumerate(plan):
            settle()
            out = Path(tmp) / f"{n}.json"
            code, seconds = run_module(module, arguments, None if module in EXTRAS else out, log)
            timings[label] = round(seconds, 1)
            got = read_figures(out) if out.exists() else []
            if label == "transfer (big)":
                for figure in got:
                    figure.section = f"transfer {args.big_gib} GiB {args.big_store.split(':')[0]}"
            if module in EXTRAS:
                got.append(
                    judged(
                        "other benchmarks",
                        f"python -m bench {module} {' '.join(arguments)}".rstrip(),
                        code,
                        "exit code",
                        limit=0,
                        higher_is_better=False,
                        target="exit 0 (its own targets; output in run.log)",
                    )
                )
            elif code != 0:
                got.append(
                    judged(
                        label,
                        "benchmark failed",
                        code,
                        "exit code",
                        limit=0,
                        higher_is_better=False,
                        target="exit 0; see run.log",
                    )
                )
            figures += got
    total = time.perf_counter() - started

    mode = "quick" if args.quick else "default"
    print_table(figures, f"osimage benchmarks ({mode} run, {total / 60:.1f} min)")
    met = sum(f.met is True for f in figures)
    missed = [f for f in figures if f.met is False]
    print(f"\n{met} targets met, {len(missed)} missed; total {total / 60:.1f} min")
    record = {
        "mode": mode,
        "machine": about,
        "seconds": round(total, 1),
        "seconds_per_benchmark": timings,
        "figures": [f.__dict__ for f in figures],
    }
    (args.out / "latest.json").write_text(json.dumps(record, indent=2))
    (args.out / "latest.md").write_text(markdown_table(figures) + "\n")
    print(f"wrote {args.out / 'latest.json'}, {args.out / 'latest.md'}, {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
