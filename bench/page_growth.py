"""How one page's latency grows with the catalogue: 1,000 -> 10,000 -> 100,000 images.

For each size a fresh ``osimage serve`` gets that many public images, seeded straight
into its SQLite database through the server's own tables while it is stopped (100,000
API calls would take longer than the whole benchmark). One keep-alive client then
times ``GET /v1/images/detail?limit=25`` for the first page and for a page after a
marker in the middle of the catalogue, ``--requests`` times each, one at a time.
Target: flat, i.e. the largest catalogue's median at most 1.5x the smallest's (indexed
queries and keyset pagination do not grow with the table).

    .venv/bin/python -m bench page_growth [--sizes 1000,10000,100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from pathlib import Path

from bench._support import (
    Figure,
    add_json_argument,
    judged,
    print_table,
    seed_catalogue,
    start_bench_server,
    write_figures,
)

SECTION = "page growth"
TARGET = 1.5


def latencies(port: int, path: str, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    samples = []
    try:
        for n in range(count + 5):
            start = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"GET {path} answered {response.status}")
            if n >= 5:  # the first few warm caches
                samples.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench page_growth", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--requests", type=int, default=200)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        for size in sizes:
            server = start_bench_server(Path(tmp) / f"n{size}")
            try:
                start = time.perf_counter()
                ids = seed_catalogue(server, size)
                print(f"{size} images seeded into SQLite in {time.perf_counter() - start:.1f} s")
                pages = {
                    "first page": "/v1/images/detail?limit=25",
                    "page after a middle marker": (
                        f"/v1/images/detail?limit=25&marker={ids[size // 2]}"
                    ),
                }
                results[size] = {
                    label: latencies(server.port, path, args.requests)
                    for label, path in pages.items()
                }
                for label, samples in results[size].items():
                    print(f"  {label}: median {statistics.median(samples):.2f} ms", flush=True)
            finally:
                server.stop()

    figures = build_figures(sizes, results)
    print_table(figures, "One page of 25 as the catalogue grows (sequential requests)")
    write_figures(args.json, figures)
    return 0


def build_figures(sizes: list[int], results: dict[int, dict[str, list[float]]]) -> list[Figure]:
    figures = []
    small, large = sizes[0], sizes[-1]
    for label in results[small]:
        med = {size: statistics.median(results[size][label]) for size in sizes}
        p99 = {size: statistics.quantiles(results[size][label], n=100)[98] for size in sizes}
        for size in sizes:
            figures.append(
                judged(
                    SECTION,
                    f"{label}, {size:,} images: p50 (p99 {p99[size]:.2f} ms)",
                    med[size],
                    "ms",
                )
            )
        figures.append(
            judged(
                SECTION,
                f"{label}: growth {small:,} -> {large:,}",
                med[large],
                "ms",
                baseline=f"{small:,} images",
                baseline_value=med[small],
                ratio=med[large] / med[small],
                limit=TARGET,
                higher_is_better=False,
                target=f"flat: <= {TARGET}x",
            )
        )
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
