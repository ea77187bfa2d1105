"""The image cache (issue 16): downloads of a large image through a cache from Swift and S3.

For each store (swift-aio's Swift and its S3 API), against one ``osimage serve
--cache-dir``: upload the image, download it once (from the store, filling the cache),
then again (from the cache). Targets: the second download at least 2x the first, and
at least 80% of the machine limit, measured in the same run as ``bench.transfer`` does
(read + md5 + sha256 + write + fsync of the same file, no HTTP). Then 16 clients download
a second, fresh image at once through a server whose store sits behind a counting proxy:
target exactly one GET of it at the store. The clients read with ``http.client`` and md5
each body. Needs swift-aio (``e=$(shared/services/swift-aio start); eval "$e"``);
without it the benchmark says so and records nothing.

    .venv/bin/python -m bench cache [--size-gib 1] [--concurrent-mib 256] [--stores swift,s3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench._support import (
    GIB,
    MIB,
    Figure,
    add_json_argument,
    judged,
    print_table,
    timed_download,
    write_figures,
)
from bench.transfer import DOWNLOAD_DIGESTS, machine_limit, write_source
from tests.support.backends import store_space, swift_aio_env
from tests.support.server import Server, start_server
from tests.support.tcp_proxy import TcpProxy

SECTION = "cache"
SPEEDUP_TARGET = 2.0
LIMIT_TARGET = 0.80
CLIENTS = 16


def _store(
    kind: str, env: dict[str, str], endpoint: str
) -> tuple[str, dict[str, str], str, Callable[[], None]]:
    """(store URL, server variables, the GET request line prefix of an object, cleanup)
    for a throwaway container or bucket of `kind`, reached at `endpoint` (host:port)."""
    space = store_space(kind)
    name = space.url.split("://", 1)[1].split("?", 1)[0]
    variables = dict(space.env)
    if kind == "swift":
        auth = urlsplit(env["ST_AUTH"])
        variables["OSIMAGE_SWIFT_AUTH_URL"] = f"http://{endpoint}{auth.path}"
        return space.url, variables, f"GET /v1/AUTH_test/{name}/", space.drop
    url = space.url.replace(env["S3_ENDPOINT_URL"], f"http://{endpoint}")
    return url, variables, f"GET /{name}/", space.drop


def _upload(server: Server, source: Path) -> str:
    image_id = str(uuid.uuid4())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    with source.open("rb") as body:
        conn.request(
            "POST",
            "/v1/images",
            body=body,
            headers={
                "x-image-meta-id": image_id,
                "x-image-meta-name": "bench-cache",
                "x-image-meta-disk_format": "raw",
                "x-image-meta-container_format": "bare",
                "content-type": "application/octet-stream",
                "content-length": str(source.stat().st_size),
            },
        )
        answer = conn.getresponse()
        answer.read()
    conn.close()
    if answer.status != 201:
        raise RuntimeError(f"upload answered {answer.status}:\n{server.log()[-2000:]}")
    return image_id


def _download(server: Server, image_id: str) -> tuple[float, str, int]:
    """Seconds, md5 and length of one download."""
    return timed_download(server.port, f"/v1/images/{image_id}")


def _cached(server: Server, image_id: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/v1/cached_images")
    body = conn.getresponse().read().decode()
    conn.close()
    return image_id in body


def _settle(server: Server, image_id: str) -> None:
    """Wait until the fill is published (it is verified just after the last byte went out)."""
    deadline = time.monotonic() + 120
    while not _cached(server, image_id) and time.monotonic() < deadline:
        time.sleep(0.1)


def _read_and_hash(source: Path) -> float:
    """Seconds to read `source` in 1 MiB pieces and md5 it."""
    md5 = hashlib.md5(usedforsecurity=False)
    start = time.perf_counter()
    with source.open("rb", buffering=0) as src:
        while chunk := src.read(MIB):
            md5.update(chunk)
    return time.perf_counter() - start


def measure(base: Path, kind: str, size: int, concurrent: int, limit: float) -> list[Figure]:
    env = swift_aio_env()
    origin = urlsplit(env["ST_AUTH"]).netloc
    figures: list[Figure] = []
    source = base / "source.raw"
    md5 = write_source(source, size)

    # 1. first and second download, the server talking to the store directly
    store, variables, _, drop = _store(kind, env, origin)
    server = start_server(
        base / f"{kind}-direct", "--store", store, "--cache-dir", str(base / f"{kind}-cache"),
        "--cache-size", f"{2 * size}", environ=variables,
    )  # fmt: skip
    try:
        image_id = _upload(server, source)
        first, first_md5, _ = _download(server, image_id)
        _settle(server, image_id)
        second, second_md5, _ = _download(server, image_id)
    finally:
        server.close()
        drop()
    ok = first_md5 == md5 == second_md5
    rate = size / MIB / limit
    first_speed, second_speed = size / MIB / first, size / MIB / second
    print(f"{kind}: first {first_speed:.0f} MiB/s, second {second_speed:.0f} MiB/s", flush=True)
    figures += [
        judged(SECTION, f"{kind}: first download (store -> cache + client)", first_speed, "MiB/s",
               baseline="machine limit", baseline_value=rate, ratio=first_speed / rate,
               note=f"md5 {'matches' if first_md5 == md5 else 'DIFFERS'}"),
        judged(SECTION, f"{kind}: second download vs the first", second_speed, "MiB/s",
               baseline="first download", baseline_value=first_speed,
               ratio=second_speed / first_speed if ok else 0.0, limit=SPEEDUP_TARGET,
               target=f">= {SPEEDUP_TARGET:g}x the first"),
        judged(SECTION, f"{kind}: second download vs the machine limit", second_speed, "MiB/s",
               baseline="machine limit", baseline_value=rate,
               ratio=second_speed / rate if ok else 0.0, limit=LIMIT_TARGET,
               target=f">= {LIMIT_TARGET:.0%} of the limit",
               note=f"md5 {'matches' if second_md5 == md5 else 'DIFFERS'}"),
    ]  # fmt: skip

    # 2. 16 concurrent first downloads, the store behind a counting proxy
    host, _, port = origin.partition(":")
    proxy = TcpProxy(host, int(port)).start()
    store, variables, get_line, drop = _store(kind, env, f"127.0.0.1:{proxy.port}")
    small = base / "concurrent.raw"
    small_md5 = write_source(small, concurrent)
    server = start_server(
        base / f"{kind}-proxied", "--store", store, "--cache-dir",
        str(base / f"{kind}-cache-2"), "--cache-size", f"{2 * concurrent}", environ=variables,
    )  # fmt: skip
    try:
        image_id = _upload(server, small)
        proxy.watch(f"{get_line}{image_id}".encode())
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda _: _download(server, image_id), range(CLIENTS)))
        reads = proxy.count(f"{get_line}{image_id}".encode())
    finally:
        server.close()
        drop()
        proxy.close()
        small.unlink()
    all_match = all(digest == small_md5 for _, digest, _ in results)
    slowest = max(seconds for seconds, _, _ in results)
    print(f"{kind}: {CLIENTS} concurrent first downloads: {reads} store GET(s)", flush=True)
    figures.append(
        judged(SECTION, f"{kind}: {CLIENTS} concurrent first downloads of {concurrent // MIB} MiB: "
               f"store GETs (md5 {'all match' if all_match else 'DIFFERS'})",
               reads if all_match else float("inf"), "GETs", limit=1, higher_is_better=False,
               target="exactly 1",
               note=f"slowest client {CLIENTS * concurrent / MIB / slowest:.0f} MiB/s in total"),
    )  # fmt: skip
    figures[-1].met = reads == 1 and all_match
    source.unlink()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cache", description=__doc__)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--concurrent-mib", type=int, default=256)
    parser.add_argument("--stores", default="swift,s3")
    parser.add_argument("--dir", type=Path, help="where the files go (default: a temp dir)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if not swift_aio_env():
        print("skipping the cache benchmark: no swift-aio (shared/services/swift-aio start)")
        write_figures(args.json, [])
        return 0
    size = int(args.size_gib * GIB) // MIB * MIB
    load = os.getloadavg()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="osimage-bench-cache-", dir=args.dir) as tmp:
        base = Path(tmp)
        source = base / "limit.raw"
        write_source(source, size)
        limit = min(machine_limit(source, base / "copy.raw", DOWNLOAD_DIGESTS) for _ in range(2))
        read_only = _read_and_hash(source)
        source.unlink()
        print(f"machine limit: {size / MIB / limit:.0f} MiB/s", flush=True)
        figures.append(
            judged(SECTION, "machine limit: read + md5 + sha256 + write + fsync",
                   size / MIB / limit, "MiB/s", note="as bench.transfer; best of two")
        )  # fmt: skip
        figures.append(
            judged(SECTION, "for reference: read + md5 of the same file (no write)",
                   size / MIB / read_only, "MiB/s",
                   note="what a cached download does at most: one read, one md5 (the client's)")
        )  # fmt: skip
        for kind in args.stores.split(","):
            figures += measure(base, kind.strip(), size, args.concurrent_mib * MIB, limit)
    after = os.getloadavg()
    figures.append(
        judged(SECTION, "machine load (1-minute average) before / after", load[0], "",
               note=f"after: {after[0]:.1f}; {psutil.cpu_count()} CPUs, shared with others")
    )  # fmt: skip
    print_table(figures, f"image cache: {size / GIB:g} GiB from Swift and S3")
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
