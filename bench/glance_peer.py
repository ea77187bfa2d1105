"""Glance itself beside osimage: the same catalogue, the same clients, Image API v2 on both.

Glance (the ``glance`` package from PyPI, with uWSGI) is installed into a venv of its
own under ``--work-dir`` (``bench/results/glance-peer/`` by default, ignored by git) and
kept there for the next run. It is configured as its docs deploy the v2 API, with one
process: uWSGI in HTTP mode (``module = glance.wsgi.api:application``, the options of
Glance's ``httpd/glance-api-uwsgi.ini`` with ``processes = 1``), SQLite and the file
store, the paste pipeline without Keystone (no ``flavor``), oslo.policy's legacy
defaults so the unauthenticated admin context may list. ``osimage serve`` runs beside it
with SQLite, a file store and ``--workers 1``. Both listen on loopback only.

Both catalogues hold the same ``--images`` public images: seeded into osimage's SQLite
database with its own table definitions (as every benchmark here does), then copied row
for row (ids, names, sizes, checksums, times, two properties each) into Glance's
database after ``glance-manage db_sync``, while neither server runs. Measured, each as
a ratio with > 1 meaning osimage is ahead:

- ``GET /v2/images/{id}`` and ``GET /v2/images?limit=25`` under load (bench._loadgen,
  the same generator and connections for both; rounds alternate, the best counts);
- walking every image (``requests`` following ``next``, ``limit=1000``, best of 2);
- create + delete (``POST /v2/images`` then ``DELETE``), sequential;
- upload (``PUT /v2/images/{id}/file``) and download of ``--size-mib`` with md5 checked,
  best of 2 each way, in the order osimage, Glance, Glance, osimage;
- both servers' peak RSS (process tree, sampled by psutil through the whole run).

Beside them, for information: each server's CPU seconds per request and per GiB (less
moved by the machine's load than rates), and Glance's upload until its file is on disk
(osimage fsyncs before it answers, Glance's file store does not).

Where Glance cannot be installed or started it prints ``SKIP glance_peer: <why>`` and
exits 0 with that line as a figure, so ``python -m bench`` goes on.

    .venv/bin/python -m bench glance_peer [--images 10000] [--seconds 5] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench._glance import (
    GLANCE_SPEC,
    GlanceInstall,
    GlanceServer,
    Skip,
    copy_catalogue,
    install_glance,
)
from bench._loadgen import Load, load, wrk_available
from bench._support import (
    MIB,
    Figure,
    Sampler,
    add_json_argument,
    database_path,
    judged,
    print_table,
    seed_catalogue,
    start_bench_server,
    timed_download,
    write_figures,
)
from tests.support.server import Server

SECTION = "vs Glance"
WORK_DIR = Path(__file__).with_name("results") / "glance-peer"
TARGET = "> 1x: osimage ahead"


# -- what both get ------------------------------------------------------------------------


class TreeRss(Sampler):
    """Peak RSS of each named process and its children, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        super().__init__(0.02)
        self.pids: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.peak.setdefault(name, 0)

    def _tree(self, pid: int) -> int:
        try:
            root = psutil.Process(pid)
            total: int = root.memory_info().rss
            for child in root.children(recursive=True):
                with suppress(psutil.NoSuchProcess):
                    total += child.memory_info().rss
            return total
        except psutil.NoSuchProcess:
            return 0

    def sample(self) -> bool:
        for name, pid in list(self.pids.items()):
            self.peak[name] = max(self.peak[name], self._tree(pid))
        return True


def walk(root: str, limit: int) -> int:
    """Every image, page by page, following `next`; returns how many were listed."""
    import requests

    count = 0
    url: str | None = f"{root}/v2/images?limit={limit}"
    with requests.Session() as http:
        while url:
            reply = http.get(url)
            reply.raise_for_status()
            body = reply.json()
            count += len(body["images"])
            url = f"{root}{body['next']}" if body.get("next") else None
    return count


def create_delete(root: str, count: int) -> float:
    """`count` sequential POST /v2/images + DELETE pairs; returns pairs per second."""
    import requests

    with requests.Session() as http:
        started = time.perf_counter()
        for n in range(count):
            made = http.post(
                f"{root}/v2/images",
                json={"name": f"bench-cd-{n}", "disk_format": "raw", "container_format": "bare"},
            )
            if made.status_code != 201:
                raise RuntimeError(f"POST /v2/images: {made.status_code} {made.text[:200]}")
            gone = http.delete(f"{root}/v2/images/{made.json()['id']}")
            if gone.status_code != 204:
                raise RuntimeError(f"DELETE: {gone.status_code} {gone.text[:200]}")
        return count / (time.perf_counter() - started)


def write_source(path: Path, size: int) -> str:
    """`size` bytes of pseudo-random data (no two MiB alike); returns their md5."""
    digest = hashlib.md5(usedforsecurity=False)
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for n in range(size // MIB):
            chunk = n.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


@dataclass
class Transfer:
    up_seconds: float
    down_seconds: float
    sync_seconds: float  # fsync of the stored file after the upload's reply (when asked)
    up_cpu: float  # the server's CPU seconds during the upload
    down_cpu: float
    md5: str  # of what was downloaded
    checksum: str  # what the server says it stored


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children (uWSGI: master + worker)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        with suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _call(port: int, method: str, path: str, body: bytes | None = None) -> Any:
    """One JSON call on a new connection (uWSGI closes after every reply anyway)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    reply = conn.getresponse()
    text = reply.read()
    conn.close()
    if reply.status >= 300:
        raise RuntimeError(f"{method} {path}: {reply.status} {text[:200]!r}")
    return json.loads(text) if text else None


def transfer(
    port: int, pid: int, source: Path, stored: Callable[[str], Path] | None = None
) -> Transfer:
    """Create an image, PUT the file (Content-Length, 1 MiB reads), GET it back with md5,
    delete it. With `stored` (image id -> its file in the store), fsync that file after
    the upload's reply and time it apart: Glance's file store does not fsync, osimage's
    does before it answers."""
    size = source.stat().st_size
    body = json.dumps({"name": "bench-transfer", "disk_format": "raw", "container_format": "bare"})
    image = _call(port, "POST", "/v2/images", body.encode())
    path = f"/v2/images/{image['id']}/file"
    os.sync()  # nobody's dirty pages (the source's, the other server's) in this upload
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    with source.open("rb") as data:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=MIB)
        conn.request(
            "PUT",
            path,
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        reply = conn.getresponse()
        text = reply.read()
        conn.close()
    up = time.perf_counter() - started
    up_cpu = cpu_seconds(pid) - cpu
    if reply.status != 204:
        raise RuntimeError(f"PUT {path}: {reply.status} {text[:200]!r}")
    sync = 0.0
    if stored is not None:
        started = time.perf_counter()
        fd = os.open(stored(image["id"]), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sync = time.perf_counter() - started
    checksum = _call(port, "GET", f"/v2/images/{image['id']}")["checksum"]
    cpu = cpu_seconds(pid)
    down, md5, got = timed_download(port, path)
    down_cpu = cpu_seconds(pid) - cpu
    if got != size:
        raise RuntimeError(f"GET {path}: {got} of {size} bytes")
    _call(port, "DELETE", f"/v2/images/{image['id']}")
    return Transfer(up, down, sync, up_cpu, down_cpu, md5, checksum)


# -- the run ------------------------------------------------------------------------------


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that every `finally` below cleans up


@contextmanager
def _servers(
    install: GlanceInstall, base: Path, images: int
) -> Iterator[tuple[Server, GlanceServer, list[str]]]:
    """Both servers running with the same catalogue of `images`; stopped on the way out."""
    glance = GlanceServer(install, base / "glance")
    ours = start_bench_server(base / "osimage", "--workers", "1")
    try:
        started = time.perf_counter()
        ids = seed_catalogue(ours, images)  # stops, seeds, restarts
        glance.db_sync()
        copied = copy_catalogue(database_path(ours), glance.database)
        if copied != images:
            raise RuntimeError(f"copied {copied} of {images} images into Glance's database")
        glance.start()
        print(
            f"both servers up with {images} images in {time.perf_counter() - started:.1f} s "
            f"(osimage :{ours.port}, Glance :{glance.port})",
            flush=True,
        )
        yield ours, glance, ids
    finally:
        glance.stop()
        ours.close()


class Report:
    """The figures of one run: osimage's value, Glance's as the baseline, a ratio > 1 when
    osimage is ahead; judged against that unless `judge` is off (informational)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.figures: list[Figure] = []

    def add(
        self,
        name: str,
        ours: float,
        theirs: float,
        unit: str,
        *,
        time_like: bool,
        judge: bool = True,
        note: str = "",
    ) -> None:
        """`time_like`: smaller is better (times, latencies, memory), so the ratio is
        Glance / osimage; otherwise osimage / Glance."""
        ratio = theirs / ours if time_like else ours / theirs
        kind = "Glance / osimage" if time_like else "osimage / Glance"
        self.figures.append(
            judged(
                SECTION,
                name,
                ours,
                unit,
                baseline=self.peer,
                baseline_value=theirs,
                ratio=ratio,
                limit=1.0 if judge else None,
                target=f"{TARGET} (ratio = {kind})" if judge else f"(reported; ratio = {kind})",
                note=note,
            )
        )
        print(
            f"{name}: osimage {ours:,.4g} {unit}, Glance {theirs:,.4g} {unit} -> {ratio:.2f}x",
            flush=True,
        )


def _under_load(
    report: Report, args: argparse.Namespace, servers: dict[str, tuple[int, int]], target: str
) -> str:
    """Both v2 reads under the same closed-loop load; rounds alternate, best rate counts.
    Returns the generator's name."""
    use_wrk = wrk_available() and not args.python_generator
    generator = ""
    for label, path in (
        ("GET /v2/images/{id}", f"/v2/images/{target}"),
        ("GET /v2/images?limit=25", "/v2/images?limit=25"),
    ):
        best: dict[str, tuple[Load, float]] = {}  # who -> (load, server CPU ms per request)
        for port, _ in servers.values():  # warm-up
            load(port, "GET", path, seconds=1, connections=args.connections, use_wrk=use_wrk)
        for _ in range(args.rounds):
            for who, (port, pid) in servers.items():
                cpu = cpu_seconds(pid)
                got = load(
                    port,
                    "GET",
                    path,
                    seconds=args.seconds,
                    connections=args.connections,
                    use_wrk=use_wrk,
                )
                per_request = (cpu_seconds(pid) - cpu) * 1e3 / max(got.requests, 1)
                if got.errors:
                    raise RuntimeError(f"{who} {path}: {got.errors} failed requests")
                print(
                    f"  {who:8} {label:24} {got.rate:7.0f} req/s  p50 {got.p50_ms:7.2f} ms  "
                    f"p99 {got.p99_ms:7.2f} ms  CPU {per_request:.2f} ms/req  (load "
                    f"{_loadavg()})",
                    flush=True,
                )
                if who not in best or got.rate > best[who][0].rate:
                    best[who] = (got, per_request)
        (a, a_cpu), (b, b_cpu) = best["osimage"], best["glance"]
        generator = a.generator
        note = f"{generator}, {args.connections} connections, best of {args.rounds}"
        report.add(f"{label}: rate", a.rate, b.rate, "req/s", time_like=False, note=note)
        report.add(f"{label}: p50", a.p50_ms, b.p50_ms, "ms", time_like=True)
        report.add(f"{label}: p99", a.p99_ms, b.p99_ms, "ms", time_like=True)
        report.add(
            f"{label}: server CPU per request",
            a_cpu,
            b_cpu,
            "ms",
            time_like=True,
            judge=False,
            note="user + system CPU of the server's processes over the round / requests",
        )
    return generator


def _alternating(
    servers: dict[str, tuple[int, int]], rounds: int
) -> Iterator[tuple[str, tuple[int, int]]]:
    """Each server once per round, the order reversed every other round (A B, B A, ...),
    so that a drift in the machine's load weighs on both alike."""
    order = list(servers.items())
    for n in range(rounds):
        yield from (order if n % 2 == 0 else reversed(order))


def _transfers(
    report: Report,
    args: argparse.Namespace,
    servers: dict[str, tuple[int, int]],
    glance: GlanceServer,
    base: Path,
) -> None:
    source = base / "source.bin"
    md5 = write_source(source, args.size_mib * MIB)
    done: dict[str, list[Transfer]] = {who: [] for who in servers}
    try:
        for who, (port, pid) in _alternating(servers, args.transfers):
            stored = glance.stored if who == "glance" else None
            done[who].append(transfer(port, pid, source, stored))
            print(
                f"  {who:8} up {args.size_mib / done[who][-1].up_seconds:6.1f} MiB/s, down "
                f"{args.size_mib / done[who][-1].down_seconds:6.1f} MiB/s  (load {_loadavg()})",
                flush=True,
            )
    finally:
        source.unlink()
    size = f"{args.size_mib / 1024:g} GiB" if args.size_mib >= 1024 else f"{args.size_mib} MiB"
    mib = args.size_mib
    # each direction's best transfer counts, with the CPU it took
    ups = {who: min(moved, key=lambda t: t.up_seconds) for who, moved in done.items()}
    downs = {who: min(moved, key=lambda t: t.down_seconds) for who, moved in done.items()}
    a, b = ups["osimage"], ups["glance"]
    durable = mib / (b.up_seconds + b.sync_seconds)
    report.add(
        f"{size} upload, PUT /v2/images/{{id}}/file",
        mib / a.up_seconds,
        mib / b.up_seconds,
        "MiB/s",
        time_like=False,
        note=f"osimage fsyncs the file before its 204, Glance's file store does not; "
        f"Glance until on disk (+ fsync of its file, {b.sync_seconds:.2f} s): {durable:.0f} MiB/s",
    )
    report.add(
        f"{size} upload until on disk (Glance: reply + fsync of its file)",
        mib / a.up_seconds,
        durable,
        "MiB/s",
        time_like=False,
        judge=False,
    )
    c, d = downs["osimage"], downs["glance"]
    report.add(
        f"{size} download, GET /v2/images/{{id}}/file",
        mib / c.down_seconds,
        mib / d.down_seconds,
        "MiB/s",
        time_like=False,
        note=f"best of {args.transfers} each way, in the order osimage, Glance, Glance, osimage",
    )
    for way, ours, theirs in (
        ("upload", a.up_cpu, b.up_cpu),
        ("download", c.down_cpu, d.down_cpu),
    ):
        report.add(
            f"{size} {way}: server CPU seconds per GiB",
            ours * 1024 / mib,
            theirs * 1024 / mib,
            "s",
            time_like=True,
            judge=False,
        )
    good = {who: all(t.md5 == t.checksum == md5 for t in moved) for who, moved in done.items()}
    report.figures.append(
        judged(
            SECTION,
            f"{size} up and down: md5 matches on both",
            int(all(good.values())),
            "yes/no",
            limit=1,
            target="1 (both downloads and checksums match)",
            note=", ".join(f"{who}: {'ok' if ok else 'MISMATCH'}" for who, ok in good.items()),
        )
    )


def measure(args: argparse.Namespace, install: GlanceInstall) -> list[Figure]:
    report = Report(install.label)
    start_load = _loadavg()
    with tempfile.TemporaryDirectory(prefix="osimage-bench-glance-") as tmp:
        base = Path(tmp)
        with _servers(install, base, args.images) as (ours, glance, ids), TreeRss() as rss:
            assert ours.proc is not None
            assert glance.proc is not None
            servers = {
                "osimage": (ours.port, ours.proc.pid),
                "glance": (glance.port, glance.proc.pid),
            }
            for who, (_, pid) in servers.items():
                rss.watch(who, pid)
            generator = _under_load(report, args, servers, ids[len(ids) // 2])

            walks: dict[str, float] = {}
            for who, (port, _) in _alternating(servers, args.walks):
                started = time.perf_counter()
                count = walk(f"http://127.0.0.1:{port}", args.walk_limit)
                took = time.perf_counter() - started
                if count != args.images:
                    raise RuntimeError(f"{who}: walked {count} of {args.images} images")
                walks[who] = min(walks.get(who, took), took)
            report.add(
                f"walk {args.images:,} images (limit={args.walk_limit}, requests + next)",
                walks["osimage"],
                walks["glance"],
                "s",
                time_like=True,
                note=f"best of {args.walks}, alternating",
            )

            pairs = {
                who: create_delete(f"http://127.0.0.1:{port}", args.creates)
                for who, (port, _) in servers.items()
            }
            report.add(
                f"create + delete, sequential ({args.creates} pairs)",
                pairs["osimage"],
                pairs["glance"],
                "pairs/s",
                time_like=False,
            )
            _transfers(report, args, servers, glance, base)
        peak = dict(rss.peak)
    report.add(
        "peak RSS (server process tree)",
        peak["osimage"] / MIB,
        peak["glance"] / MIB,
        "MiB",
        time_like=True,
        note="sampled every 20 ms through the run; uWSGI master + worker for Glance",
    )
    end_load = _loadavg()
    report.figures.append(
        Figure(
            SECTION,
            "machine load average (1 min) at start",
            float(start_load.split()[0]),
            "",
            note=f"1/5/15 min: start {start_load}, end {end_load}; {os.cpu_count()} "
            f"CPUs; {install.label}, 1 process, installed in {install.seconds:.0f} s"
            f"{' (cached venv)' if install.cached else ''}; load generator: {generator}",
            detail={
                "load_start": start_load,
                "load_end": end_load,
                "glance": install.glance,
                "server": install.server,
            },
        )
    )
    return report.figures


def skipped(reason: str) -> Figure:
    first = reason.strip().splitlines()[0] if reason.strip() else "unknown"
    return Figure(
        SECTION,
        f"skipped: {first[:100]}",
        0,
        "",
        target="Glance installed and running",
        note=reason.strip(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench glance_peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one load round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--walks", type=int, default=2, help="walks of the catalogue (best)")
    parser.add_argument("--walk-limit", type=int, default=1000, help="page size of the walk")
    parser.add_argument("--creates", type=int, default=60, help="create + delete pairs")
    parser.add_argument("--size-mib", type=int, default=1024, help="upload/download size")
    parser.add_argument("--transfers", type=int, default=2, help="uploads+downloads (best)")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 images, 2 s rounds, 256 MiB: for a quick look"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=WORK_DIR,
        help="where Glance's venv is kept between runs (default: %(default)s)",
    )
    parser.add_argument("--glance", default=GLANCE_SPEC, help="pip requirement for Glance")
    parser.add_argument("--install-timeout", type=float, default=900)
    parser.add_argument("--python-generator", action="store_true", help="do not use wrk")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.seconds, args.rounds = 2000, 2.0, 1
        args.walks, args.creates, args.size_mib, args.transfers = 1, 30, 256, 1
    signal.signal(signal.SIGTERM, _terminate)
    print(f"load average before: {_loadavg()} ({os.cpu_count()} CPUs)", flush=True)
    try:
        install = install_glance(args.work_dir, args.glance, args.install_timeout)
        print(
            f"peer: {install.label}, uWSGI HTTP mode as in Glance's docs, 1 process; "
            f"venv {install.venv}{' (cached)' if install.cached else ''}",
            flush=True,
        )
        figures = measure(args, install)
    except Skip as why:
        print(f"SKIP glance_peer: {why}", flush=True)
        figures = [skipped(str(why))]
    print(f"load average after: {_loadavg()}", flush=True)
    print_table(figures, f"osimage vs Glance, Image API v2, {args.images:,} images")
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
