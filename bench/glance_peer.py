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
- walking every image (``requests`` following ``next``, ``limit=1000``);
- create + delete (``POST /v2/images`` then ``DELETE``), sequential;
- upload (``PUT /v2/images/{id}/file``) and download of ``--size-mib`` with md5 checked;
- both servers' peak RSS (process tree, sampled by psutil through the whole run).

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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

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
    add_json_argument,
    database_path,
    judged,
    print_table,
    seed_catalogue,
    start_bench_server,
    write_figures,
)
from tests.support.server import Server

SECTION = "vs Glance"
WORK_DIR = Path(__file__).with_name("results") / "glance-peer"
TARGET = "> 1x: osimage ahead"


# -- what both get ------------------------------------------------------------------------


class TreeRss:
    """Peak RSS of each named process and its children, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.peak.setdefault(name, 0)

    def _sample(self, pid: int) -> int:
        try:
            root = psutil.Process(pid)
            total: int = root.memory_info().rss
            for child in root.children(recursive=True):
                with suppress(psutil.NoSuchProcess):
                    total += child.memory_info().rss
            return total
        except psutil.NoSuchProcess:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for name, pid in list(self.pids.items()):
                self.peak[name] = max(self.peak[name], self._sample(pid))

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
    up_mib_s: float
    down_mib_s: float
    md5: str  # of what was downloaded
    checksum: str  # what the server says it stored


def transfer(port: int, source: Path) -> Transfer:
    """Create an image, PUT the file (Content-Length, 1 MiB reads), GET it back with md5."""
    size = source.stat().st_size
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=MIB)
    headers = {"Content-Type": "application/json"}
    body = json.dumps({"name": "bench-transfer", "disk_format": "raw", "container_format": "bare"})
    conn.request("POST", "/v2/images", body=body, headers=headers)
    reply = conn.getresponse()
    image = json.loads(reply.read())
    if reply.status != 201:
        raise RuntimeError(f"POST /v2/images: {reply.status} {image}")
    path = f"/v2/images/{image['id']}/file"
    conn.close()  # uWSGI closes after each reply; start every call on a new connection
    os.sync()
    started = time.perf_counter()
    with source.open("rb") as data:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=MIB)
        conn.request(
            "PUT",
            path,
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        reply = conn.getresponse()
        text = reply.read()
    up = time.perf_counter() - started
    conn.close()
    if reply.status != 204:
        raise RuntimeError(f"PUT {path}: {reply.status} {text[:200]!r}")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/v2/images/{image['id']}")
    stored = json.loads(conn.getresponse().read())
    conn.close()
    digest = hashlib.md5(usedforsecurity=False)
    got = 0
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path)
    reply = conn.getresponse()
    if reply.status != 200:
        raise RuntimeError(f"GET {path}: {reply.status}")
    while chunk := reply.read(MIB):
        digest.update(chunk)
        got += len(chunk)
    down = time.perf_counter() - started
    conn.close()
    if got != size:
        raise RuntimeError(f"GET {path}: {got} of {size} bytes")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("DELETE", f"/v2/images/{image['id']}")
    conn.getresponse().read()
    conn.close()
    return Transfer(size / MIB / up, size / MIB / down, digest.hexdigest(), stored["checksum"])


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


def measure(args: argparse.Namespace, install: GlanceInstall) -> list[Figure]:
    use_wrk = wrk_available() and not args.python_generator
    figures: list[Figure] = []
    peer = install.label
    start_load = _loadavg()

    def add(
        name: str, ours: float, theirs: float, unit: str, *, time_like: bool, note: str = ""
    ) -> None:
        ratio = theirs / ours if time_like else ours / theirs
        kind = "Glance / osimage" if time_like else "osimage / Glance"
        figures.append(
            judged(
                SECTION,
                name,
                ours,
                unit,
                baseline=peer,
                baseline_value=theirs,
                ratio=ratio,
                limit=1.0,
                target=f"{TARGET} (ratio = {kind})",
                note=note,
            )
        )
        print(
            f"{name}: osimage {ours:,.4g} {unit}, Glance {theirs:,.4g} {unit} -> {ratio:.2f}x",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="osimage-bench-glance-") as tmp:
        base = Path(tmp)
        with _servers(install, base, args.images) as (ours, glance, ids), TreeRss() as rss:
            assert ours.proc is not None
            assert glance.proc is not None
            rss.watch("osimage", ours.proc.pid)
            rss.watch("glance", glance.proc.pid)
            ports = {"osimage": ours.port, "glance": glance.port}
            target = ids[len(ids) // 2]
            generator = ""
            for label, path in (
                ("GET /v2/images/{id}", f"/v2/images/{target}"),
                ("GET /v2/images?limit=25", "/v2/images?limit=25"),
            ):
                best: dict[str, Load] = {}
                for port in ports.values():  # warm-up
                    load(
                        port, "GET", path, seconds=1, connections=args.connections, use_wrk=use_wrk
                    )
                for _ in range(args.rounds):
                    for who, port in ports.items():
                        got = load(
                            port,
                            "GET",
                            path,
                            seconds=args.seconds,
                            connections=args.connections,
                            use_wrk=use_wrk,
                        )
                        if got.errors:
                            raise RuntimeError(f"{who} {path}: {got.errors} failed requests")
                        print(
                            f"  {who:8} {label:26} {got.rate:8.0f} req/s  p50 "
                            f"{got.p50_ms:.2f} ms  p99 {got.p99_ms:.2f} ms  (load "
                            f"{_loadavg()})",
                            flush=True,
                        )
                        if who not in best or got.rate > best[who].rate:
                            best[who] = got
                generator = best["osimage"].generator
                note = f"{generator}, {args.connections} connections, best of {args.rounds}"
                a, b = best["osimage"], best["glance"]
                add(f"{label}: rate", a.rate, b.rate, "req/s", time_like=False, note=note)
                add(f"{label}: p50", a.p50_ms, b.p50_ms, "ms", time_like=True)
                add(f"{label}: p99", a.p99_ms, b.p99_ms, "ms", time_like=True)

            walks: dict[str, float] = {}
            for who in ports:
                times = []
                for _ in range(args.walks):
                    started = time.perf_counter()
                    count = walk(f"http://127.0.0.1:{ports[who]}", args.walk_limit)
                    times.append(time.perf_counter() - started)
                    if count != args.images:
                        raise RuntimeError(f"{who}: walked {count} of {args.images} images")
                walks[who] = sorted(times)[len(times) // 2]
            add(
                f"walk {args.images:,} images (limit={args.walk_limit}, requests + next)",
                walks["osimage"],
                walks["glance"],
                "s",
                time_like=True,
                note=f"median of {args.walks}",
            )

            pairs = {
                who: create_delete(f"http://127.0.0.1:{port}", args.creates)
                for who, port in ports.items()
            }
            add(
                f"create + delete, sequential ({args.creates} pairs)",
                pairs["osimage"],
                pairs["glance"],
                "pairs/s",
                time_like=False,
            )

            source = base / "source.bin"
            md5 = write_source(source, args.size_mib * MIB)
            moved = {who: transfer(port, source) for who, port in ports.items()}
            source.unlink()
            size = (
                f"{args.size_mib / 1024:g} GiB"
                if args.size_mib >= 1024
                else (f"{args.size_mib} MiB")
            )
            add(
                f"{size} upload, PUT /v2/images/{{id}}/file",
                moved["osimage"].up_mib_s,
                moved["glance"].up_mib_s,
                "MiB/s",
                time_like=False,
            )
            add(
                f"{size} download, GET /v2/images/{{id}}/file",
                moved["osimage"].down_mib_s,
                moved["glance"].down_mib_s,
                "MiB/s",
                time_like=False,
            )
            good = {who: t.md5 == md5 and t.checksum == md5 for who, t in moved.items()}
            figures.append(
                judged(
                    SECTION,
                    f"{size} up and down: md5 matches on both",
                    int(all(good.values())),
                    "yes/no",
                    limit=1,
                    target="1 (both downloads and checksums match)",
                    note=", ".join(
                        f"{who}: {'ok' if ok else 'MISMATCH'}" for who, ok in good.items()
                    ),
                )
            )
        peak = dict(rss.peak)
    add(
        "peak RSS (server process tree)",
        peak["osimage"] / MIB,
        peak["glance"] / MIB,
        "MiB",
        time_like=True,
        note="uWSGI master + worker for Glance",
    )
    end_load = _loadavg()
    figures.append(
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
    return figures


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
    parser.add_argument("--walks", type=int, default=3, help="walks of the catalogue (median)")
    parser.add_argument("--walk-limit", type=int, default=1000, help="page size of the walk")
    parser.add_argument("--creates", type=int, default=100, help="create + delete pairs")
    parser.add_argument("--size-mib", type=int, default=1024, help="upload/download size")
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
        args.walks, args.creates, args.size_mib = 1, 30, 256
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
