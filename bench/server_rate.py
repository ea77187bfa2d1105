"""Server request rate and latency under concurrent load, against bare Starlette on uvicorn.

One ``osimage serve`` holds ``--images`` public images (10,000 by default, seeded into its
database). A closed-loop load generator (`wrk` when installed, else an asyncio
generator in its own process, which HEAD always uses: see `bench._loadgen`) drives
``HEAD /v1/images/{id}`` and ``GET /v1/images/detail?limit=25`` over ``--connections``
keep-alive connections; the same generator drives two baselines, both bare Starlette
on uvicorn with the same HTTP implementation as the server (``--http``, default: what
``osimage serve`` uses): one answers a constant (`bench._bare_app`), the other, the
floor, does the same work as osimage with plain sqlite3 on the server's database
(`bench._floor_app`: every request reads it; the same headers, the same page bytes).
Rounds alternate between the three; each one's best round counts. Every round also
prints the server's CPU time per request (psutil: user + system of its process) and the
load average, the figures that hold up on a shared machine.
Targets (issue 14): HEAD at least 65% of the constant's rate, the detail page 40%; and
each route at least 70% of the floor's rate (`FLOOR_TARGETS`). The floor's own rate
against the constant is reported, unjudged: it bounds what the first targets can reach.

    .venv/bin/python -m bench server_rate [--images 10000] [--seconds 5] [--rounds 2]
        [--http h11|httptools]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from bench._loadgen import Load, load, wrk_available
from bench._support import (
    Figure,
    add_json_argument,
    add_load_arguments,
    database_path,
    judged,
    print_table,
    seed_catalogue,
    start_bench_server,
    write_figures,
)
from osimage.server.settings import SETTINGS
from tests.support.server import free_port, wait_for_answer

SECTION = "server load"
TARGETS = {"HEAD": 0.65, "GET": 0.40}
# of the floor's rate: the same work on bare Starlette + sqlite3 (`bench._floor_app`)
FLOOR_TARGETS = {"HEAD": 0.70, "GET": 0.70}
CONSTANT = "bare Starlette+uvicorn"
FLOOR = "same work on bare Starlette"


def default_http() -> str:
    """The HTTP implementation `osimage serve` uses here (OSIMAGE_HTTP, else the default)."""
    table = next(row.default for row in SETTINGS if row.name == "http")
    return os.environ.get("OSIMAGE_HTTP") or table or "h11"


def start_baseline(
    module: str, implementation: str, *args: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A baseline app (`bench._bare_app`, `bench._floor_app`) on a free port, answering."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, str(port), implementation, *args])
    if wait_for_answer(port, "/versions", timeout=30, proc=proc) == 200:
        return proc, port
    proc.kill()
    raise SystemExit(f"{module} did not start")


def profile(
    proc: subprocess.Popen[bytes] | None, svg: Path, seconds: float
) -> subprocess.Popen[bytes]:
    """py-spy (pip install py-spy) sampling the server while it is under load."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if proc is None or not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    svg.parent.mkdir(parents=True, exist_ok=True)
    duration = str(max(1, int(seconds) - 1))
    return subprocess.Popen(
        [spy, "record", "--pid", str(proc.pid), "--duration", duration, "--nonblocking",
         "--output", str(svg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench server_rate", description=__doc__)
    add_load_arguments(parser)
    parser.add_argument(
        "--http",
        choices=("h11", "httptools"),
        default=default_http(),
        help="HTTP implementation of both servers (default: osimage serve's)",
    )
    parser.add_argument(
        "--profile", type=Path, help="record py-spy flame graphs of the server into this dir"
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    use_wrk = wrk_available() and not args.python_generator
    if not use_wrk and not args.python_generator:
        print("wrk is not installed (apt-get install -y wrk): using the asyncio generator")

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        server = start_bench_server(Path(tmp) / "rate", "--http", args.http)
        bare, bare_port = start_baseline("bench._bare_app", args.http)
        floor: subprocess.Popen[bytes] | None = None
        print(f"HTTP implementation of every server: {args.http}")
        try:
            ids = seed_catalogue(server, args.images)
            database = str(database_path(server))  # seeded: the floor reads it as it is
            floor, floor_port = start_baseline("bench._floor_app", args.http, database)
            assert server.proc is not None
            processes = {
                "osimage": psutil.Process(server.proc.pid),
                "bare": psutil.Process(bare.pid),
                "floor": psutil.Process(floor.pid),
            }
            target = ids[len(ids) // 2]
            cases = {
                "HEAD /v1/images/{id}": ("HEAD", f"/v1/images/{target}"),
                "GET /v1/images/detail?limit=25": ("GET", "/v1/images/detail?limit=25"),
            }
            figures: list[Figure] = []
            for label, (method, path) in cases.items():
                best: dict[str, Load] = {}
                ports = {"osimage": server.port, "bare": bare_port, "floor": floor_port}
                for port in ports.values():  # warm-up
                    load(port, method, path, seconds=1, connections=args.connections,
                         use_wrk=use_wrk)  # fmt: skip
                for round_ in range(args.rounds):
                    for who, port in ports.items():
                        spy = None
                        if args.profile and who == "osimage" and round_ == args.rounds - 1:
                            spy = profile(server.proc, args.profile / f"{method}.svg", args.seconds)
                        before = cpu_seconds(processes[who])
                        got = load(port, method, path, seconds=args.seconds,
                                   connections=args.connections, use_wrk=use_wrk)  # fmt: skip
                        cpu = (cpu_seconds(processes[who]) - before) / max(1, got.requests)
                        if spy is not None:
                            spy.wait()
                        if got.errors:
                            raise SystemExit(f"{who} {label}: {got.errors} failed requests")
                        print(f"{label:32} {who:8} {got.rate:8.0f} req/s  p50 {got.p50_ms:.2f} ms"
                              f"  p99 {got.p99_ms:.2f} ms  cpu {cpu * 1e6:4.0f} us/req"
                              f"  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                        if who not in best or got.rate > best[who].rate:
                            best[who] = got
                figures += figures_for(
                    label, best["osimage"], best["bare"], args.connections, TARGETS[method]
                )
                figures += floor_figures(label, best, FLOOR_TARGETS[method])
        finally:
            server.stop()
            for proc in (bare, floor):
                if proc is not None:
                    proc.terminate()
                    proc.wait()
    print_table(figures, f"Load on a catalogue of {args.images} images")
    write_figures(args.json, figures)
    return 0


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of `process` so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def figures_for(
    label: str, ours: Load, bare: Load, connections: int, target: float
) -> list[Figure]:
    how = f"{ours.generator}, {connections} connections, best of rounds"
    return [
        judged(
            SECTION,
            f"{label}: rate",
            ours.rate,
            "req/s",
            baseline=CONSTANT,
            baseline_value=bare.rate,
            ratio=ours.rate / bare.rate,
            limit=target,
            target=f">= {target:.0%} of the baseline",
            note=how,
        ),
        judged(
            SECTION,
            f"{label}: p50 latency",
            ours.p50_ms,
            "ms",
            baseline=CONSTANT,
            baseline_value=bare.p50_ms,
            ratio=ours.p50_ms / bare.p50_ms,
            target="(reported; ratio = osimage / baseline)",
        ),
        judged(
            SECTION,
            f"{label}: p99 latency",
            ours.p99_ms,
            "ms",
            baseline=CONSTANT,
            baseline_value=bare.p99_ms,
            ratio=ours.p99_ms / bare.p99_ms,
            target="(reported; ratio = osimage / baseline)",
        ),
    ]


def floor_figures(label: str, best: dict[str, Load], target: float) -> list[Figure]:
    """osimage against the floor (judged), and the floor against the constant: the bound."""
    ours, floor, bare = best["osimage"], best["floor"], best["bare"]
    return [
        judged(
            SECTION,
            f"{label}: rate vs the same work on bare Starlette",
            ours.rate,
            "req/s",
            baseline=FLOOR,
            baseline_value=floor.rate,
            ratio=ours.rate / floor.rate,
            limit=target,
            target=f">= {target:.0%} of the baseline",
        ),
        judged(
            SECTION,
            f"{label}: bound: the same work on bare Starlette vs the constant",
            floor.rate,
            "req/s",
            baseline=CONSTANT,
            baseline_value=bare.rate,
            ratio=floor.rate / bare.rate,
            target="(reported; the most a server doing this work reaches here)",
            note="bench._floor_app: plain sqlite3 on the server's database, no osimage",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
