"""Upload and download a large generated file through the SDK and a loopback server.

The machine's own limit is measured in the same run, with no HTTP: read the file in
1 MiB chunks, hash them with md5 and sha256, write the same bytes to another file on the
same disk and fsync it (what the filesystem store does). Then, against one ``osimage
serve`` whose store lives on that disk:

- upload with ``conn.image.create_image(name, filename=...)`` (the SDK's documented way:
  it hashes the file first, then streams it, hashing again),
- upload with ``conn.image.upload_image(data=<open file>)`` (one pass, openstacksdk's shape),
- download with ``conn.image.download_image(image, output=path)`` (verified as it streams),

and through Image API v2 on the same server, with ``requests`` streaming 1 MiB chunks:

- upload: ``POST /v2/images`` then ``PUT /v2/images/{id}/file`` (application/octet-stream,
  with Content-Length, read from the file as it goes),
- download: ``GET /v2/images/{id}/file`` streamed to a file, its md5 compared with the
  source's as it streams.

``--api v1,v2`` picks the APIs (default both); each v2 row follows its v1 counterpart.

Each transfer's speed is a ratio against the limit (target: at least 0.70), and the
peak RSS growth of this client process and of the server process is sampled every
5 ms (targets: under 64 MiB each; issue 2 asks the server for under 100 MiB and an md5
that matches). ``--store`` points the server at Swift or S3 (their ``OSIMAGE_*``
variables must be set), e.g. the 6 GiB ``--big`` run of ``python -m bench``.

    .venv/bin/python -m bench transfer [--size-gib 2] [--store swift://bench] [--api v1,v2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from bench._support import (
    GIB,
    MIB,
    Figure,
    PeakRss,
    add_json_argument,
    judged,
    print_table,
    start_bench_server,
    write_figures,
)

SECTION = "transfer"
SPEED_TARGET = 0.70
RSS_BUDGET_MIB = 64
ISSUE2_SERVER_BUDGET_MIB = 100
APIS = ("v1", "v2")


def write_source(path: Path, size: int) -> str:
    """Write `size` bytes in which no two MiB are alike; return their md5."""
    block = bytearray(os.urandom(MIB))
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("wb") as out:
        for n in range(size // MIB):
            block[:8] = n.to_bytes(8, "big")
            out.write(block)
            md5.update(block)
        out.flush()
        os.fsync(out.fileno())  # so its writeback does not slow the limit measured next
    return md5.hexdigest()


def store_env(store: str | None) -> dict[str, str]:
    """OSIMAGE_SWIFT_* from swift-aio's ST_* exports, when only those are set."""
    if not store or not store.startswith("swift://") or "OSIMAGE_SWIFT_AUTH_URL" in os.environ:
        return {}
    names = {"ST_AUTH": "OSIMAGE_SWIFT_AUTH_URL", "ST_USER": "OSIMAGE_SWIFT_USER",
             "ST_KEY": "OSIMAGE_SWIFT_KEY"}  # fmt: skip
    return {ours: os.environ[theirs] for theirs, ours in names.items() if theirs in os.environ}


def machine_limit(source: Path, target: Path) -> float:
    """Seconds to read `source`, md5+sha256 it and write+fsync the bytes to `target`."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    start = time.perf_counter()
    with source.open("rb", buffering=0) as src, target.open("wb", buffering=0) as out:
        while chunk := src.read(MIB):
            md5.update(chunk)
            sha256.update(chunk)
            out.write(chunk)
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


class Transfer:
    """One timed transfer with the client's and the server's RSS sampled throughout."""

    def __init__(self, label: str, server_pid: int) -> None:
        self.label = label
        self.server_pid = server_pid
        self.seconds = 0.0
        self.client_growth = 0
        self.server_growth = 0
        self.client_cpu = 0.0
        self.server_cpu = 0.0
        self.load = (0.0, 0.0)  # the machine's 1-minute load average before and after

    def run(self, action: Callable[[], Any]) -> Any:
        with PeakRss(os.getpid()) as client, PeakRss(self.server_pid) as server:
            cpu = _cpu(client.process), _cpu(server.process)
            before = os.getloadavg()[0]
            start = time.perf_counter()
            result = action()
            self.seconds = time.perf_counter() - start
            self.client_cpu = _cpu(client.process) - cpu[0]
            self.server_cpu = _cpu(server.process) - cpu[1]
            self.load = (before, os.getloadavg()[0])
        self.client_growth, self.server_growth = client.growth, server.growth
        return result


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench transfer", description=__doc__)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--store", help="server store URL (default: files in the data dir)")
    parser.add_argument("--dir", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument("--skip-two-pass", action="store_true", help="skip create_image")
    parser.add_argument(
        "--api", type=_apis, default=list(APIS), help="comma-separated APIs to run (default: v1,v2)"
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    size = int(args.size_gib * GIB) // MIB * MIB

    parent = args.dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    need = (3.5 + ("v2" in args.api)) * size
    if free < need:
        raise SystemExit(f"{parent} has {free / GIB:.1f} GiB free; this run needs {need / GIB:.1f}")
    with tempfile.TemporaryDirectory(prefix="osimage-bench-", dir=parent) as tmp:
        base = Path(tmp)
        figures = measure(base, size, args.store, two_pass=not args.skip_two_pass, apis=args.api)
    store = args.store or "file store"
    print_table(
        figures,
        f"{size / GIB:g} GiB through the SDK (v1), requests (v2) and osimage serve ({store})",
    )
    write_figures(args.json, figures)
    return 0


def _apis(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in APIS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--api takes a list of {', '.join(APIS)}; got {text!r}")
    return [name for name in APIS if name in chosen]


class FileBody:
    """A request body streamed from a file in 1 MiB chunks; its length is known, so
    requests sends Content-Length rather than chunked encoding."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb", buffering=0) as data:
            while chunk := data.read(MIB):
                yield chunk


class V2Client:
    """Image API v2 data calls over one keep-alive ``requests.Session``."""

    def __init__(self, root: str) -> None:
        import requests

        self.root = f"{root}/v2"
        self.http = requests.Session()

    def warm(self) -> None:
        """Open the connection outside the measurement."""
        self.http.get(f"{self.root}/images", params={"limit": 1}, timeout=60).raise_for_status()

    def upload(self, name: str, source: Path) -> dict[str, Any]:
        """Create an image and upload `source` as its data; return the image afterwards."""
        created = self.http.post(
            f"{self.root}/images",
            json={"name": name, "disk_format": "raw", "container_format": "bare"},
            timeout=60,
        )
        created.raise_for_status()
        image_id = created.json()["id"]
        put = self.http.put(
            f"{self.root}/images/{image_id}/file",
            data=FileBody(source),
            headers={"Content-Type": "application/octet-stream"},
            timeout=600,
        )
        put.raise_for_status()
        shown = self.http.get(f"{self.root}/images/{image_id}", timeout=60)
        shown.raise_for_status()
        image: dict[str, Any] = shown.json()
        return image

    def download(self, image_id: str, target: Path) -> tuple[str, int]:
        """Stream the image's data into `target`; return its md5 and size."""
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        with (
            self.http.get(f"{self.root}/images/{image_id}/file", stream=True, timeout=600) as got,
            target.open("wb", buffering=0) as out,
        ):
            got.raise_for_status()
            for chunk in got.iter_content(MIB):
                md5.update(chunk)
                out.write(chunk)
                size += len(chunk)
        return md5.hexdigest(), size

    def delete(self, image_id: str) -> None:
        self.http.delete(f"{self.root}/images/{image_id}", timeout=60).raise_for_status()

    def close(self) -> None:
        self.http.close()


def measure(
    base: Path,
    size: int,
    store: str | None,
    *,
    two_pass: bool,
    apis: list[str] | tuple[str, ...] = APIS,
) -> list[Figure]:
    import osimage

    source = base / "source.raw"
    print(f"writing {size / GIB:g} GiB to {source.name} ...", flush=True)
    md5 = write_source(source, size)
    limit = machine_limit(source, base / "copy.raw")
    print(f"machine limit: {size / MIB / limit:.0f} MiB/s", flush=True)

    os.environ.update(store_env(store))  # the server inherits them
    server = start_bench_server(base / "srv", *(["--store", store] if store else []))
    transfers: list[Transfer] = []
    checksums_match = True

    def timed(label: str, action: Callable[[], Any]) -> Any:
        assert server.proc is not None
        transfer = Transfer(label, server.proc.pid)
        result = transfer.run(action)
        transfers.append(transfer)
        print(f"{label}: {size / MIB / transfer.seconds:.0f} MiB/s (load average "
              f"{transfer.load[0]:.1f} -> {transfer.load[1]:.1f})", flush=True)  # fmt: skip
        return result

    try:
        conn = osimage.connect(auth_type="none", image_endpoint_override=server.endpoint)
        v2 = V2Client(server.url)
        conn.image.images(limit=1)  # connections set up outside the measurement
        v2.warm()
        image = None
        if "v1" in apis:
            uploads: list[tuple[str, Callable[[], Any]]] = []
            if two_pass:
                uploads.append(
                    (
                        "v1 upload, create_image(filename)",
                        lambda: conn.image.create_image(
                            "bench-two-pass", filename=str(source), disk_format="raw",
                            container_format="bare",
                        ),
                    )
                )  # fmt: skip

            def one_pass() -> Any:
                with source.open("rb") as data:
                    return conn.image.upload_image(
                        container_format="bare", disk_format="raw", data=data,
                        name="bench-one-pass", size=size,
                    )  # fmt: skip

            uploads.append(("v1 upload, upload_image(file)", one_pass))
            for label, action in uploads:
                image = timed(label, action)
                checksums_match &= image.checksum == md5 and image.size == size
        v2_image: dict[str, Any] | None = None
        if "v2" in apis:
            v2_image = timed(
                "v2 upload, PUT /v2/images/{id}/file", lambda: v2.upload("bench-v2", source)
            )
            assert v2_image is not None
            checksums_match &= (
                v2_image["checksum"] == md5
                and v2_image["size"] == size
                and v2_image["status"] == "active"
            )
        target = base / "back.raw"
        if image is not None:
            timed(
                "v1 download, download_image(output)",
                lambda: conn.image.download_image(image, output=str(target)),
            )
            checksums_match &= target.stat().st_size == size  # content verified by the SDK
            target.unlink()
        if v2_image is not None:
            image_id = v2_image["id"]
            got_md5, got_size = timed(
                "v2 download, GET /v2/images/{id}/file", lambda: v2.download(image_id, target)
            )
            checksums_match &= got_md5 == md5 and got_size == size
            target.unlink()
            v2.delete(image_id)
        limit = min(limit, machine_limit(source, base / "copy.raw"))  # best of two
        for found in list(conn.image.images()):
            conn.image.delete_image(found)
        v2.close()
        conn.close()
    finally:
        server.stop()

    rate = size / MIB / limit
    figures = [
        judged(
            SECTION,
            "machine limit: read + md5 + sha256 + write + fsync",
            rate,
            "MiB/s",
            note="no HTTP; best of two runs; the baseline of every transfer speed below",
        )
    ]
    for t in transfers:
        speed = size / MIB / t.seconds
        figures.append(
            judged(
                SECTION,
                f"{t.label}: speed",
                speed,
                "MiB/s",
                baseline="machine limit",
                baseline_value=rate,
                ratio=speed / rate,
                limit=SPEED_TARGET,
                target=f">= {SPEED_TARGET:.0%} of the limit",
                note=(
                    f"CPU busy: client {t.client_cpu / t.seconds:.0%}, "
                    f"server {t.server_cpu / t.seconds:.0%} of one core over {t.seconds:.1f} s; "
                    f"load average {t.load[0]:.1f} -> {t.load[1]:.1f} on {os.cpu_count()} CPUs"
                ),
                detail={
                    "client_cpu_s": t.client_cpu,
                    "server_cpu_s": t.server_cpu,
                    "load_before": t.load[0],
                    "load_after": t.load[1],
                },
            )
        )
        for who, growth in (("client", t.client_growth), ("server", t.server_growth)):
            figures.append(
                judged(
                    SECTION,
                    f"{t.label}: {who} RSS growth",
                    growth / MIB,
                    "MiB",
                    limit=RSS_BUDGET_MIB,
                    higher_is_better=False,
                    target=f"< {RSS_BUDGET_MIB} MiB",
                )
            )
    worst_server = max(t.server_growth for t in transfers) / MIB
    figures.append(
        judged(
            "issue 2",
            f"{size / GIB:g} GiB up and down: md5 {'matches' if checksums_match else 'DIFFERS'}, "
            "worst server RSS growth",
            worst_server if checksums_match else float("inf"),
            "MiB",
            limit=ISSUE2_SERVER_BUDGET_MIB,
            higher_is_better=False,
            target=f"md5 matches and < {ISSUE2_SERVER_BUDGET_MIB} MiB",
        )
    )
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
