"""find by name and by id: round trips and time, osimage vs openstacksdk vs glanceclient.

One osimage server holds ``--images`` public images (10,000 by default, seeded into its
database; the one found is uploaded through the API with 1 MiB of data). Each client
finds it by name and by id ``--reps`` times, interleaved; the median time counts, and
the round trips of one find are counted on the wire. osimage and openstacksdk use
``conn.image.find_image``, glanceclient ``glanceclient.common.utils.find_resource``
(what its shell uses). Target: osimage needs no more round trips than the thriftiest
peer; time is reported as a ratio against the fastest peer.

    .venv/bin/python -m bench find [--images 10000] [--reps 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

SECTION = "find"
TARGET_NAME = "bench-find-target"


def create_target(endpoint: str) -> str:
    """One real image with 1 MiB of data (a GET by id returns it, as v1 does)."""
    import osimage

    with osimage.connect(auth_type="none", image_endpoint_override=endpoint) as conn:
        image = conn.image.create_image(
            TARGET_NAME, data=b"\0" * (1024 * 1024), disk_format="raw", container_format="bare",
            is_public=True,
        )  # fmt: skip
    return str(image.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench find", description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=30)
    add_json_argument(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        server = start_bench_server(Path(tmp) / "find")
        try:
            seed_catalogue(server, args.images - 1)
            target = create_target(server.endpoint)
            figures = measure(server.endpoint, TARGET_NAME, target, args.reps)
        finally:
            server.stop()
    print_table(figures, f"find in a catalogue of {args.images} images")
    write_figures(args.json, figures)
    return 0


def measure(endpoint: str, name: str, image_id: str, reps: int) -> list[Figure]:
    from glanceclient.common import utils as glance_utils

    clients = make_clients(endpoint)
    finders: dict[str, Callable[[str], Any]] = {
        "osimage": lambda key: clients.osimage_conn.image.find_image(key),
        "openstacksdk": lambda key: clients.openstack_conn.image.find_image(key),
        "glanceclient": lambda key: glance_utils.find_resource(clients.glance.images, key),
    }
    for finder in finders.values():  # warm-up: imports, version discovery
        finder(image_id)
    figures: list[Figure] = []
    for label, key in (("by name", name), ("by id", image_id)):
        times: dict[str, list[float]] = {who: [] for who in finders}
        trips: dict[str, int] = {}
        paths: dict[str, list[str]] = {}
        for _ in range(reps):
            for who, finder in finders.items():
                counter = clients.counters[who]
                counter.reset()
                start = time.perf_counter()
                found = finder(key)
                times[who].append(time.perf_counter() - start)
                trips[who], paths[who] = counter.requests, list(counter.paths)
                if found is None or found.id != image_id:
                    raise SystemExit(f"{who} find {label} returned {found!r}")
        median = {who: statistics.median(values) for who, values in times.items()}
        peers = [who for who in finders if who != "osimage"]
        fastest = min(peers, key=lambda who: median[who])
        thriftiest = min(peers, key=lambda who: trips[who])
        figures.append(
            judged(
                SECTION,
                f"osimage {label}: round trips",
                trips["osimage"],
                "req",
                baseline=f"fewest of peers ({thriftiest})",
                baseline_value=trips[thriftiest],
                limit=trips[thriftiest],
                higher_is_better=False,
                target="<= the thriftiest peer",
                note="; ".join(f"{who}: {', '.join(paths[who])}" for who in finders),
            )
        )
        figures.append(
            judged(
                SECTION,
                f"osimage {label}: time",
                median["osimage"] * 1000,
                "ms",
                baseline=f"fastest peer ({fastest})",
                baseline_value=median[fastest] * 1000,
                ratio=median[fastest] / median["osimage"],
                target="(none; ratio = peer time / osimage time)",
                detail={who: median[who] * 1000 for who in finders},
            )
        )
        for who in peers:
            figures.append(
                judged(
                    SECTION,
                    f"{who} {label}: time ({trips[who]} req)",
                    median[who] * 1000,
                    "ms",
                )
            )
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
