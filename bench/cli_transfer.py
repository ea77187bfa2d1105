"""CLI transfer benchmark: upload and download a large file through the `osimage` command.

Starts a loopback ``osimage serve`` in a temporary directory, writes a ``--size-mib`` file
(1024 by default), then runs ``osimage image create --file`` and ``osimage image download
--file`` as subprocesses, sampling each one's RSS. Growth is measured against the peak RSS
of ``osimage image list`` in the same run. Times are compared with a bare ``http.client``
upload and download of the same bytes (the fastest a client can go) and with the machine
limits of ``bench.transfer`` (no HTTP, one thread: read + md5 + sha256 + sha512 + write +
fsync for the upload, read + md5 + sha256 + write + fsync for the download; target 0.80).

Each round runs both limits, the CLI upload and download and the bare ones; rounds repeat
until the two best runs of each are within 10%, at most ``--runs`` (3) times, and each
figure is the median run, with the CPU seconds per GiB of the CLI process and of the
server, and the load average.

Run from the repository root: ``python -m bench.cli_transfer [--size-mib 1024]``.
Prints numbers; exits 1 if a transfer's RSS growth reaches ``--budget-mib`` (64).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.transfer import DOWNLOAD_DIGESTS, UPLOAD_DIGESTS, machine_limit
from tests.support.server import start_server

MIB = 1024 * 1024
OSIMAGE = Path(sys.executable).with_name("osimage")


SPEED_TARGET = 0.80  # issue 14
SPREAD = 0.10


@dataclass
class Run:
    seconds: float
    peak_rss: int
    stdout: bytes
    cpu: float = 0.0  # CPU seconds of the process (user + system)


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sampled(args: list[str], env: dict[str, str]) -> Run:
    """Run `args`, sampling the process's RSS every 5 ms; fail loudly on a non-zero exit."""
    cpu = _children_cpu()
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
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode(errors='replace')}")
    return Run(time.perf_counter() - start, peak, b"".join(out), _children_cpu() - cpu)


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


class Series:
    """Rates (MiB/s) and CPU seconds per GiB of the runs of one transfer."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.rates: list[float] = []
        self.client_cpu: list[float] = []
        self.server_cpu: list[float] = []
        self.loads: list[float] = []

    def add(self, rate: float, client_cpu: float = 0.0, server_cpu: float = 0.0) -> None:
        self.rates.append(rate)
        self.client_cpu.append(client_cpu)
        self.server_cpu.append(server_cpu)
        self.loads.append(os.getloadavg()[0])

    def stable(self) -> bool:
        best = sorted(self.rates, reverse=True)
        return len(best) >= 2 and (best[0] - best[1]) / best[0] <= SPREAD

    def median(self) -> float:
        return statistics.median(self.rates)

    def summary(self) -> str:
        rates = ", ".join(f"{rate:.0f}" for rate in self.rates)
        return (
            f"median {self.median():6.0f} MiB/s of {len(self.rates)} runs ({rates}); CPU s/GiB "
            f"client {statistics.median(self.client_cpu):.2f} "
            f"server {statistics.median(self.server_cpu):.2f}; "
            f"load {min(self.loads):.1f}-{max(self.loads):.1f}"
        )


def _server_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """The CPU seconds this process and the server spend from its creation to `record`."""

    def __init__(self, served: psutil.Process | None, gib: float) -> None:
        self.served = served
        self.gib = gib
        self.server = _server_cpu(served) if served else 0.0
        self.client = _self_cpu()

    def record(self, series: Series, rate: float, client_cpu: float | None = None) -> None:
        """Add a run at `rate` MiB/s to `series`, with CPU per GiB; `client_cpu` is that of
        a child process that did the work (else this process's own is taken)."""
        client = _self_cpu() - self.client if client_cpu is None else client_cpu
        server = _server_cpu(self.served) - self.server if self.served else 0.0
        series.add(rate, client / self.gib, server / self.gib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    size = options.size_mib * MIB
    gib = size / (1024 * MIB)
    up_limit, down_limit = Series("upload limit"), Series("download limit")
    cli_up, cli_down = Series("CLI upload"), Series("CLI download")
    bare_up, bare_down = Series("bare upload"), Series("bare download")
    peaks: list[int] = []

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        base = Path(tmp)
        server = start_server(base / "srv")
        assert server.proc is not None
        served = psutil.Process(server.proc.pid)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
            env["OS_IMAGE_URL"] = server.url
            source = base / "big.raw"
            md5 = write_file(source, options.size_mib)
            for digests in (UPLOAD_DIGESTS, DOWNLOAD_DIGESTS):  # warm-up, not timed
                machine_limit(source, base / "copy.raw", digests)
            idle = run_sampled([str(OSIMAGE), "image", "list", "-f", "value"], env)
            target = base / "back.raw"
            for round_ in range(max(2, options.runs)):
                for limit, digests in ((up_limit, UPLOAD_DIGESTS), (down_limit, DOWNLOAD_DIGESTS)):
                    meter = CpuMeter(None, gib)
                    seconds = machine_limit(source, base / "copy.raw", digests)
                    meter.record(limit, options.size_mib / seconds)
                meter = CpuMeter(served, gib)
                up = run_sampled(
                    [str(OSIMAGE), "image", "create", "--name", f"bench-{round_}",
                     "--disk-format", "raw", "--container-format", "bare", "--file",
                     str(source), "--no-progress", "-f", "json"],
                    env,
                )  # fmt: skip
                meter.record(cli_up, options.size_mib / up.seconds, up.cpu)
                created = json.loads(up.stdout)
                if created["checksum"] != md5:
                    raise SystemExit(f"uploaded checksum {created['checksum']} != {md5}")
                meter = CpuMeter(served, gib)
                down = run_sampled(
                    [str(OSIMAGE), "image", "download", created["id"], "--file", str(target),
                     "--no-progress"],
                    env,
                )  # fmt: skip
                meter.record(cli_down, options.size_mib / down.seconds, down.cpu)
                if target.stat().st_size != size:
                    raise SystemExit("downloaded size differs")
                target.unlink()
                peaks += [up.peak_rss, down.peak_rss]
                meter = CpuMeter(served, gib)
                seconds, bare_id = bare_upload("127.0.0.1", server.port, source)
                meter.record(bare_up, options.size_mib / seconds)
                meter = CpuMeter(served, gib)
                seconds = bare_download("127.0.0.1", server.port, bare_id)
                meter.record(bare_down, options.size_mib / seconds)
                for image_id in (created["id"], bare_id):
                    delete_image("127.0.0.1", server.port, image_id)
                every = (up_limit, down_limit, cli_up, cli_down, bare_up, bare_down)
                if round_ + 1 >= options.runs or all(series.stable() for series in every):
                    break
        finally:
            server.stop()

    print(f"{options.size_mib} MiB through `osimage` against a loopback `osimage serve`")
    print(f"idle      `osimage image list` peak RSS {idle.peak_rss / MIB:.1f} MiB (the baseline)")
    for series in (up_limit, down_limit, bare_up, bare_down):
        print(f"{series.label:<15} {series.summary()}")
    for series, limit, bare in ((cli_up, up_limit, bare_up), (cli_down, down_limit, bare_down)):
        ratio = series.median() / limit.median()
        verdict = "met" if ratio >= SPEED_TARGET else "MISSED"
        print(
            f"{series.label:<15} {series.summary()}; {ratio:.2f}x of the {limit.label} "
            f"({verdict}: >= {SPEED_TARGET:.2f}), {series.median() / bare.median():.2f}x of "
            "bare http.client"
        )
    worst = max(peaks) - idle.peak_rss
    verdict = "within" if worst < options.budget_mib * MIB else "OVER"
    print(f"worst RSS growth {worst / MIB:.1f} MiB: {verdict} the {options.budget_mib} MiB budget")
    if worst >= options.budget_mib * MIB:
        raise SystemExit(1)


def delete_image(host: str, port: int, image_id: str) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("DELETE", f"/v1/images/{image_id}")
    conn.getresponse().read()
    conn.close()


if __name__ == "__main__":
    main()
