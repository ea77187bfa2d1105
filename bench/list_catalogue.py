"""Listing a whole catalogue (detail, every page) through three clients of one osimage server.

The server holds ``--images`` public images (10,000 by default, each with two custom
properties, seeded straight into its SQLite database). osimage's SDK
(``conn.image.images(limit=N)``), openstacksdk's v1 proxy (``conn.image.images(limit=N)``)
and python-glanceclient v1 (``images.list(page_size=N)``) each list them all, in turn,
``--runs`` times; the median time counts. Target: osimage at least 1.5x as fast as the
fastest of the other two.

    .venv/bin/python -m bench list_catalogue [--images 10000] [--page-size 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench._clients import make_clients
from bench._support import (
    Figure,
    add_json_argument,
    judged,
    print_table,
    seed_catalogue,
    start_bench_server,
    write_figures,
)

SECTION = "list all"
TARGET = 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench list_catalogue", description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        server = start_bench_server(Path(tmp) / "list")
        try:
            seed_catalogue(server, args.images)
            figures = measure(server.endpoint, args.images, args.page_size, args.runs)
        finally:
            server.stop()
    print_table(figures, f"Listing {args.images} images, detail, pages of {args.page_size}")
    write_figures(args.json, figures)
    return 0


def measure(endpoint: str, count: int, page: int, runs: int) -> list[Figure]:
    clients = make_clients(endpoint)
    floor = requests.Session()

    def raw_pages() -> list[Any]:
        """requests + json.loads over the same pages: the server's share of any client."""
        found: list[Any] = []
        params: dict[str, Any] = {"limit": page}
        while True:
            got = floor.get(f"{endpoint}/images/detail", params=params).json()["images"]
            found += got
            if len(got) < page:
                return found
            params["marker"] = got[-1]["id"]

    listers: dict[str, Callable[[], list[Any]]] = {
        "osimage": lambda: list(clients.osimage_conn.image.images(limit=page)),
        "openstacksdk": lambda: list(clients.openstack_conn.image.images(limit=page)),
        "glanceclient": lambda: list(clients.glance.images.list(page_size=page)),
        "raw HTTP": raw_pages,
    }
    # one warm-up each: imports, version discovery, connection set-up are not listing
    for lister in listers.values():
        lister()
    times: dict[str, list[float]] = {name: [] for name in listers}
    trips: dict[str, int] = {}
    for _ in range(runs):
        for name, lister in listers.items():  # interleaved, so drift hits all alike
            if name in clients.counters:
                clients.counters[name].reset()
            start = time.perf_counter()
            found = lister()
            times[name].append(time.perf_counter() - start)
            trips[name] = clients.counters[name].requests if name in clients.counters else 0
            if len(found) != count:
                raise SystemExit(f"{name} listed {len(found)} images, not {count}")
    median = {name: statistics.median(values) for name, values in times.items()}
    peers = {name: median[name] for name in ("openstacksdk", "glanceclient")}
    fastest = min(peers, key=lambda name: peers[name])
    figures = [
        judged(
            SECTION,
            "osimage SDK: list all",
            median["osimage"],
            "s",
            baseline=f"fastest peer ({fastest})",
            baseline_value=median[fastest],
            ratio=median[fastest] / median["osimage"],
            limit=TARGET,
            target=f">= {TARGET}x the fastest peer's speed",
            note=f"{trips['osimage']} requests; medians of {runs} runs",
            detail={"runs": times["osimage"], "requests": trips["osimage"]},
        )
    ]
    for name in peers:
        figures.append(
            judged(
                SECTION,
                f"{name}: list all",
                median[name],
                "s",
                note=f"{trips[name]} requests",
                detail={"runs": times[name], "requests": trips[name]},
            )
        )
    figures.append(
        judged(
            SECTION,
            "raw HTTP: requests + json.loads",
            median["raw HTTP"],
            "s",
            note="the same pages without any SDK: the server's (and JSON's) share of every client",
            detail={"runs": times["raw HTTP"]},
        )
    )
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
