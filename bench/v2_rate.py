"""Image API v2 against v1 on the same server and catalogue, under concurrent load.

One ``osimage serve`` holds ``--images`` public images (seeded). The same closed-loop
generator drives ``GET /v2/images/{id}`` against ``HEAD /v1/images/{id}``, and
``GET /v2/images?limit=25`` against ``GET /v1/images/detail?limit=25``; rounds
alternate, each one's best round counts.
Target (issue 12): each v2 call within 10% of its v1 counterpart's rate.

    .venv/bin/python -m bench v2_rate [--images 10000] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench._loadgen import Load, load, wrk_available
from bench._support import (
    Figure,
    add_json_argument,
    add_load_arguments,
    judged,
    print_table,
    seed_catalogue,
    start_bench_server,
    write_figures,
)

SECTION = "v2 against v1"
TARGET = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench v2_rate", description=__doc__)
    add_load_arguments(parser)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    use_wrk = wrk_available() and not args.python_generator

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        server = start_bench_server(Path(tmp) / "v2")
        try:
            ids = seed_catalogue(server, args.images)
            target = ids[len(ids) // 2]
            pairs = {
                "GET /v2/images/{id} vs HEAD /v1/images/{id}": (
                    ("GET", f"/v2/images/{target}"),
                    ("HEAD", f"/v1/images/{target}"),
                ),
                "GET /v2/images?limit=25 vs GET /v1/images/detail?limit=25": (
                    ("GET", "/v2/images?limit=25"),
                    ("GET", "/v1/images/detail?limit=25"),
                ),
            }
            figures: list[Figure] = []
            for label, cases in pairs.items():
                best: dict[str, Load] = {}
                for method, path in cases:  # warm-up
                    load(server.port, method, path, seconds=1, connections=args.connections,
                         use_wrk=use_wrk)  # fmt: skip
                for _ in range(args.rounds):
                    for who, (method, path) in zip(("v2", "v1"), cases, strict=True):
                        got = load(server.port, method, path, seconds=args.seconds,
                                   connections=args.connections, use_wrk=use_wrk)  # fmt: skip
                        if got.errors:
                            raise SystemExit(f"{method} {path}: {got.errors} failed requests")
                        print(f"{method} {path[:40]:40} {got.rate:8.0f} req/s  "
                              f"p50 {got.p50_ms:.2f} ms", flush=True)  # fmt: skip
                        if who not in best or got.rate > best[who].rate:
                            best[who] = got
                figures.append(
                    judged(
                        SECTION,
                        f"{label}: rate",
                        best["v2"].rate,
                        "req/s",
                        baseline="the v1 call",
                        baseline_value=best["v1"].rate,
                        ratio=best["v2"].rate / best["v1"].rate,
                        limit=TARGET,
                        target=f">= {TARGET:.0%} of the baseline",
                        note=f"{best['v2'].generator}, {args.connections} connections",
                    )
                )
        finally:
            server.stop()
    print_table(figures, f"v2 against v1 on a catalogue of {args.images} images")
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
