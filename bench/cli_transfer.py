"""CLI transfer benchmark: upload and download a large file through the `osimage` command.

Starts a loopback ``osimage serve`` in a temporary directory, writes a ``--size-mib`` file
(1024 by default), then runs ``osimage image create --file`` and ``osimage image download
--file`` as subprocesses, sampling each one's RSS. Growth is measured against the peak RSS
of ``osimage image list`` in the same run, and times against a bare ``http.client`` upload
and download of the same bytes (the baseline a CLI cannot beat).

Run from the repository root: ``python -m bench.cli_transfer [--size-mib 1024]``.
Prints numbers; exits 1 if a transfer's RSS growth reaches ``--budget-mib`` (64).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support.server import start_server

MIB = 1024 * 1024
OSIMAGE = Path(sys.executable).with_name("osimage")


@dataclass
class Run:
    seconds: float
    peak_rss: int
    stdout: bytes


def run_sampled(args: list[str], env: dict[str, str]) -> Run:
    """Run `args`, sampling the process's RSS every 5 ms; fail loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    peak = 0
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.005)
    reader.join()
    err = proc.stderr.read() if proc.stderr else b""  # type: ignore[union-attr]
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode(errors='replace')}")
    return Run(time.perf_counter() - start, peak, b"".join(out))


def write_file(path: Path, size_mib: int) -> str:
    block = os.urandom(MIB)
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("wb") as out:
        for i in range(size_mib):
            chunk = i.to_bytes(8, "big") + block[8:]  # no two MiB alike
            out.write(chunk)
            md5.update(chunk)
    return md5.hexdigest()


def bare_upload(host: str, port: int, path: Path) -> tuple[float, str]:
    """POST the file with http.client, streamed: the fastest a client can go."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=600)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(path.stat().st_size),
        "x-image-meta-name": "bench-bare",
        "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare",
    }
    with path.open("rb") as body:
        conn.request("POST", "/v1/images", body=body, headers=headers)
        response = conn.getresponse()
        record = json.loads(response.read())
    conn.close()
    return time.perf_counter() - start, record["image"]["id"]


def bare_download(host: str, port: int, image_id: str) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=600)
    conn.request("GET", f"/v1/images/{image_id}")
    response = conn.getresponse()
    while response.read(MIB):
        pass
    conn.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--budget-mib", type=int, default=64)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        base = Path(tmp)
        server = start_server(base / "srv")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
            env["OS_IMAGE_URL"] = server.url
            source = base / "big.raw"
            md5 = write_file(source, options.size_mib)
            size = options.size_mib * MIB

            idle = run_sampled([str(OSIMAGE), "image", "list", "-f", "value"], env)
            up = run_sampled(
                [str(OSIMAGE), "image", "create", "--name", "bench", "--disk-format", "raw",
                 "--container-format", "bare", "--file", str(source), "--no-progress",
                 "-f", "json"],
                env,
            )  # fmt: skip
            created = json.loads(up.stdout)
            if created["checksum"] != md5:
                raise SystemExit(f"uploaded checksum {created['checksum']} != {md5}")
            target = base / "back.raw"
            down = run_sampled(
                [str(OSIMAGE), "image", "download", created["id"], "--file", str(target),
                 "--no-progress"],
                env,
            )  # fmt: skip
            if target.stat().st_size != size:
                raise SystemExit("downloaded size differs")
            target.unlink()
            bare_up, bare_id = bare_upload("127.0.0.1", server.port, source)
            bare_down = bare_download("127.0.0.1", server.port, bare_id)
        finally:
            server.stop()

    def line(label: str, run: Run, baseline: float) -> str:
        growth = (run.peak_rss - idle.peak_rss) / MIB
        rate = size / MIB / run.seconds
        return (
            f"{label:<9} {run.seconds:7.2f} s  {rate:8.1f} MiB/s  "
            f"x{run.seconds / baseline:4.2f} of bare http.client  "
            f"peak RSS {run.peak_rss / MIB:6.1f} MiB  growth {growth:+6.1f} MiB"
        )

    print(f"{options.size_mib} MiB through `osimage` against a loopback `osimage serve`")
    print(f"idle      `osimage image list` peak RSS {idle.peak_rss / MIB:.1f} MiB (the baseline)")
    print(line("upload", up, bare_up))
    print(line("download", down, bare_down))
    worst = max(up.peak_rss, down.peak_rss) - idle.peak_rss
    verdict = "within" if worst < options.budget_mib * MIB else "OVER"
    print(f"worst RSS growth {worst / MIB:.1f} MiB: {verdict} the {options.budget_mib} MiB budget")
    if worst >= options.budget_mib * MIB:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
