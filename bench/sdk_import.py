"""SDK benchmarks: what importing the SDK costs, and how many round trips find/list take.

1. Import time (fresh processes, median of ``--runs``) and peak RSS of
   ``import osimage.image.v1.image`` vs ``from openstack.image.v1 import image`` vs
   ``import glanceclient.v1.client``, printed with ratios against osimage.
2. Requests and response bytes of find/list with osimage and with openstacksdk against
   one loopback ``osimage serve``, holding ``--images`` public images.

Run from the repository root: ``python -m bench.sdk_import [--runs 7] [--images 60]``.
Benchmarks print numbers; they assert nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMPORTS = {
    "osimage": "import osimage.image.v1.image",
    "openstacksdk": "from openstack.image.v1 import image",
    "glanceclient": "import glanceclient.v1.client",
}

_CHILD = """
import resource, sys, time
start = time.perf_counter()
exec(sys.argv[1])
elapsed = time.perf_counter() - start
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(sys.modules))
"""


@dataclass
class ImportCost:
    seconds: float
    rss_kib: int
    modules: int


def import_cost(statement: str, runs: int) -> ImportCost:
    """Median import time and RSS of `statement` over `runs` fresh interpreters."""
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, statement], check=True, capture_output=True, text=True
        ).stdout.split()
        samples.append((float(out[0]), int(out[1]), int(out[2])))
    return ImportCost(
        seconds=statistics.median(s[0] for s in samples),
        rss_kib=int(statistics.median(s[1] for s in samples)),
        modules=int(statistics.median(s[2] for s in samples)),
    )


def bench_imports(runs: int) -> None:
    bare = import_cost("pass", runs)
    costs = {name: import_cost(stmt, runs) for name, stmt in IMPORTS.items()}
    base = costs["osimage"]
    print(
        f"\nImport cost (median of {runs} fresh processes; bare interpreter RSS "
        f"{bare.rss_kib / 1024:.1f} MiB)"
    )
    print(f"{'':14}{'time ms':>9}{'x osimage':>11}{'+RSS MiB':>10}{'x osimage':>11}{'modules':>9}")
    for name, cost in costs.items():
        rss = cost.rss_kib - bare.rss_kib
        base_rss = max(base.rss_kib - bare.rss_kib, 1)
        print(
            f"{name:14}{cost.seconds * 1000:9.1f}{cost.seconds / base.seconds:11.1f}"
            f"{rss / 1024:10.1f}{rss / base_rss:11.1f}{cost.modules - bare.modules:9d}"
        )


@dataclass
class Counter:
    """Counts the requests (and response bytes) a requests.Session sends."""

    calls: list[tuple[str, str, int, int]] = field(default_factory=list)

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        # a HEAD announces the GET's length but carries no body
        size = 0 if response.request.method == "HEAD" else len(response.content)
        path = response.request.path_url
        self.calls.append((response.request.method, path, response.status_code, size))

    def measure(self, action: Callable[[], object]) -> tuple[int, int, str, list[str]]:
        """Requests, response bytes, what came back, and the requests as text."""
        self.calls.clear()
        try:
            result = action()
            found = f"{len(result)} items" if isinstance(result, list) else _found(result)
        except Exception as exc:  # a benchmark reports failures, it does not stop
            found = type(exc).__name__
        shown = [f"{m} {p.split('?')[0]} {s}" for m, p, s, _ in self.calls]
        return len(self.calls), sum(c[3] for c in self.calls), found, shown


def _found(result: object) -> str:
    if result is None:
        return "None"
    name = getattr(result, "name", None)
    return f"name={name!r}"


def bench_round_trips(count: int) -> None:
    import requests
    from keystoneauth1 import adapter, noauth, session
    from openstack import connection

    from osimage.image.v1.image import Image
    from tests.support.server import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "bench")
        try:
            plain = adapter.Adapter(session.Session(), endpoint_override=server.endpoint)
            target = Image.new(
                name="bench-target", is_public=True, disk_format="raw", container_format="bare"
            ).create(plain, data=b"\0" * (1024 * 1024))
            for n in range(count - 1):
                Image.new(name=f"bench-{n:03d}", is_public=True, size=0).create(plain)

            ours = Counter()
            http = requests.Session()
            http.hooks["response"].append(ours.hook)
            sdk = adapter.Adapter(session.Session(session=http), endpoint_override=server.endpoint)

            theirs = Counter()
            http2 = requests.Session()
            http2.hooks["response"].append(theirs.hook)
            conn = connection.Connection(
                session=session.Session(auth=noauth.NoAuth(), session=http2),
                image_endpoint_override=server.endpoint,
                image_api_version="1",
            )
            list(conn.image.images())  # version discovery happens once; not counted below

            missing_id = str(uuid.uuid4())
            cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
                (
                    "find by name",
                    lambda: Image.find(sdk, "bench-target"),
                    lambda: conn.image.find_image("bench-target"),
                ),
                (
                    "find by id",
                    lambda: Image.find(sdk, target.id or ""),
                    lambda: conn.image.find_image(target.id or ""),
                ),
                (
                    "find missing name",
                    lambda: Image.find(sdk, "no-such-image"),
                    lambda: conn.image.find_image("no-such-image"),
                ),
                (
                    "find missing id",
                    lambda: Image.find(sdk, missing_id),
                    lambda: conn.image.find_image(missing_id),
                ),
                (
                    f"list all ({count})",
                    lambda: list(Image.list(sdk)),
                    lambda: list(conn.image.images()),
                ),
            ]
            print(f"\nRound trips against one osimage serve holding {count} public images")
            print(
                f"{'':20}{'osimage':>8}{'bytes':>9}  {'result':20}"
                f"{'openstacksdk':>13}{'bytes':>9}  result"
            )
            details = []
            for label, mine, other in cases:
                n1, b1, r1, s1 = ours.measure(mine)
                n2, b2, r2, s2 = theirs.measure(other)
                print(f"{label:20}{n1:8d}{b1:9d}  {r1:20}{n2:13d}{b2:9d}  {r2}")
                details.append((label, s1, s2))
            print("\nRequests sent (method path status):")
            for label, s1, s2 in details:
                print(f"  {label}\n    osimage:      {s1}\n    openstacksdk: {s2}")
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_import", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per import")
    parser.add_argument("--images", type=int, default=60, help="images on the server")
    parser.add_argument("--skip-imports", action="store_true")
    parser.add_argument("--skip-round-trips", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_imports:
        bench_imports(args.runs)
    if not args.skip_round_trips:
        bench_round_trips(args.images)


if __name__ == "__main__":
    main()
