"""What every benchmark shares: figures with targets, RSS sampling, seeding a catalogue, output.

A benchmark module measures, builds `Figure`s (a value, the same run's baseline, and the
target the ratio is judged by), prints them with `print_table`, and writes them as JSON
with `write_figures` when run with ``--json PATH`` (which is how ``python -m bench``
collects them).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import httpx
import psutil

from osimage.wire import PREFIX
from tests.support.server import Server, start_server

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Figure:
    """One measured figure, judged by `ratio` (or by `value` when there is no baseline).

    `higher_is_better` says which side of `target` passes; `met` is None when a figure
    is informational (no target).
    """

    section: str
    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def judged(
    section: str,
    name: str,
    value: float,
    unit: str,
    *,
    baseline: str = "",
    baseline_value: float | None = None,
    ratio: float | None = None,
    limit: float | None = None,
    higher_is_better: bool = True,
    target: str = "",
    note: str = "",
    detail: dict[str, Any] | None = None,
) -> Figure:
    """A figure whose `ratio` (or, without one, `value`) is compared with `limit`."""
    measured = ratio if ratio is not None else value
    met: bool | None = None
    if limit is not None:
        met = measured >= limit if higher_is_better else measured <= limit
    return Figure(
        section, name, value, unit, baseline, baseline_value, ratio, target, met, note,
        detail or {},
    )  # fmt: skip


def add_json_argument(parser: Any) -> None:
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def add_load_arguments(parser: Any) -> None:
    """The options of the request-rate benchmarks: catalogue size and the load's rounds."""
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--python-generator", action="store_true", help="do not use wrk")


def write_figures(path: Path | None, figures: list[Figure]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(f) for f in figures], indent=2))


def read_figures(path: Path) -> list[Figure]:
    return [Figure(**record) for record in json.loads(path.read_text())]


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def verdict(figure: Figure) -> str:
    return {True: "met", False: "MISSED", None: "-"}[figure.met]


def table_rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for f in figures:
        base = f"{f.baseline}: {_number(f.baseline_value, f.unit)}" if f.baseline else ""
        ratio = f"{f.ratio:.3g}x" if f.ratio is not None else ""
        rows.append(
            [f.section, f.name, _number(f.value, f.unit), base, ratio, f.target, verdict(f)]
        )
    return rows


HEADER = ["section", "figure", "value", "baseline (same run)", "ratio", "target", "verdict"]


def print_table(figures: list[Figure], title: str = "") -> None:
    rows = [HEADER, *table_rows(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    if title:
        print(f"\n{title}")
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for f in figures:
        if f.note:
            print(f"  * {f.section} / {f.name}: {f.note}")


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in table_rows(figures):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


class Sampler:
    """Calls `sample` at once and then every `interval` seconds, in a thread, while in a
    ``with`` block; it stops early when `sample` returns False."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        while self.sample() and not self._stop.wait(self.interval):
            pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakRss(Sampler):
    """Samples a process's RSS every few milliseconds in a thread; `growth` is peak - start."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        super().__init__(interval)
        self.process = psutil.Process(pid)
        self.start_rss: int = self.process.memory_info().rss
        self.peak: int = self.start_rss

    def sample(self) -> bool:
        try:
            self.peak = max(self.peak, self.process.memory_info().rss)
        except psutil.NoSuchProcess:
            return False
        return True

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def timed_download(port: int, path: str) -> tuple[float, str, int]:
    """GET `path` from 127.0.0.1:`port` on a new connection, read in 1 MiB pieces; return
    the seconds it took, the body's md5 and its length. RuntimeError on a status but 200."""
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path)
    answer = conn.getresponse()
    if answer.status != 200:
        raise RuntimeError(f"GET {path} answered {answer.status}")
    while block := answer.read(MIB):
        md5.update(block)
        size += len(block)
    conn.close()
    return time.perf_counter() - start, md5.hexdigest(), size


def start_bench_server(base: Path, *args: str) -> Server:
    """A noauth `osimage serve` on SQLite and, unless `args` name a store, files under
    `base`, whatever backend the test suite is told to use (the benchmarks seed SQLite)."""
    data = base / "data"
    chosen = list(args)
    if "--database" not in chosen:
        chosen += ["--database", f"sqlite+aiosqlite:///{data / 'osimage.db'}"]
    if "--store" not in chosen:
        chosen += ["--store", (data / "images").as_uri()]
    return start_server(base, *chosen)


def request_rate(
    server: Server,
    method: str,
    path: str,
    seconds: float,
    threads: int,
    headers: dict[str, str] | None = None,
) -> float:
    """Requests per second that `threads` keep-alive clients get in `seconds`; exits on the
    first answer that is not 200."""
    counts = [0] * threads
    failures: list[str] = []
    stop = time.monotonic() + seconds

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            while time.monotonic() < stop:
                conn.request(method, path, headers=headers or {})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    failures.append(f"{method} {path} answered {resp.status}")
                    return
                counts[slot] += 1
        finally:
            conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise SystemExit(failures[0])
    return sum(counts) / (time.monotonic() - started)


def upload_image(server: Server, name: str, token: str | None = None) -> str:
    """The id of a new 1 KiB raw/bare image uploaded through v1; exits if that fails."""
    headers = {
        "Content-Type": "application/octet-stream",
        PREFIX + "name": name,
        PREFIX + "disk_format": "raw",
        PREFIX + "container_format": "bare",
        **({"X-Auth-Token": token} if token else {}),
    }
    with httpx.Client(trust_env=False, timeout=30) as client:
        resp = client.post(f"{server.url}/v1/images", headers=headers, content=b"x" * 1024)
    if resp.status_code != 201:
        raise SystemExit(f"creating the image failed: {resp.status_code} {resp.text}")
    image_id: str = resp.json()["image"]["id"]
    return image_id


def database_path(server: Server) -> Path:
    return server.data_dir / "osimage.db"


def seed_catalogue(server: Server, count: int, *, properties: int = 2) -> list[str]:
    """Stop `server`, insert `count` public active images straight into its SQLite
    database through the server's own table definitions, restart it; return the ids.

    Used instead of `count` API calls to keep the run short; the server must have started
    once (so its migrations ran). Images get `properties` custom properties each and
    distinct creation times; they have no data (the listing never reads it).
    """
    from sqlalchemy import create_engine, insert

    from osimage.server.db.tables import image_properties, images

    server.stop()
    engine = create_engine(f"sqlite:///{database_path(server)}")
    start = datetime(2025, 1, 1)
    ids = [str(uuid.UUID(int=(n + 1) * 7919 + 1, version=4)) for n in range(count)]
    batch = 5000
    with engine.begin() as conn:
        for first in range(0, count, batch):
            rows = []
            props = []
            for n in range(first, min(first + batch, count)):
                when = start + timedelta(seconds=n)
                digest = hashlib.md5(str(n).encode(), usedforsecurity=False).hexdigest()
                rows.append(
                    {
                        "id": ids[n], "name": f"bench-{n:06d}", "status": "active",
                        "size": 1024 * (n % 97 + 1), "virtual_size": None,
                        "checksum": digest, "sha256": None, "disk_format": "qcow2",
                        "container_format": "bare", "min_disk": 0, "min_ram": 0,
                        "owner": "p-bench", "is_public": True, "protected": False,
                        "deleted": False, "created_at": when, "updated_at": when,
                        "deleted_at": None, "location": None, "location_is_external": False,
                        "visibility": "public",
                    }
                )  # fmt: skip
                props += [
                    {"image_id": ids[n], "key": f"bench_key_{k}", "value": f"value-{n}-{k}"}
                    for k in range(properties)
                ]
            conn.execute(insert(images), rows)
            if props:
                conn.execute(insert(image_properties), props)
    engine.dispose()
    server.start(timeout=120)
    return ids


def run_module(
    module: str, args: list[str], json_path: Path | None, log: Path
) -> tuple[int, float]:
    """Run ``python -m bench.<module>`` (with ``--json`` if `json_path`); tee its output
    into `log`."""
    start = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"\n===== bench.{module} {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                f"bench.{module}",
                *args,
                *(["--json", str(json_path)] if json_path else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            out.write(line)
        code = proc.wait()
    return code, time.perf_counter() - start
