"""Closed-loop HTTP/1.1 load on loopback: `wrk` when installed, else an asyncio generator.

`load()` returns requests per second and p50/p99 latency; the server under test and its
baseline get exactly the same generator and settings. The asyncio fallback runs in its
own process (``python -m bench._loadgen``) so it never shares a GIL with a server.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Load:
    generator: str
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def load(
    port: int, method: str, path: str, *, seconds: float, connections: int, use_wrk: bool
) -> Load:
    """Send `method path` to 127.0.0.1:`port` over `connections` keep-alive connections.

    HEAD always uses the asyncio generator: wrk 4.1 (Debian's) waits for the body a
    HEAD reply's Content-Length announces, and hangs.
    """
    if use_wrk and method != "HEAD":
        return _wrk(port, method, path, seconds, connections)
    out = subprocess.run(
        [sys.executable, "-m", "bench._loadgen", str(port), method, path, str(seconds),
         str(connections)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return Load(**json.loads(out))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not found:
        raise ValueError(f"wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _wrk(port: int, method: str, path: str, seconds: float, connections: int) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "{method}"\n')
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", script.name, f"http://127.0.0.1:{port}{path}"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    finally:
        Path(script.name).unlink()
    percent = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.MULTILINE))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rate and total and "50" in percent and "99" in percent):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return Load(
        "wrk", float(rate.group(1)), _ms(percent["50"]), _ms(percent["99"]),
        int(total.group(1)), failed,
    )  # fmt: skip


async def _client(
    port: int, request: bytes, head: bool, stop: float, latencies: list[float], errors: list[int]
) -> None:
    """One keep-alive connection in a closed loop. A server that answers
    ``Connection: close`` (uWSGI's http-socket, as Glance deploys it) gets a new
    connection for the next request, and the connect counts in that request's latency."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connected = True
    try:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            if not connected:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                connected = True
            writer.write(request)
            header = await reader.readuntil(b"\r\n\r\n")
            status = int(header.split(b" ", 2)[1])
            length = 0
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    connected = False
            if not head and length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status >= 400:
                errors.append(status)
            if not connected:
                writer.close()
    finally:
        writer.close()


async def _run(port: int, method: str, path: str, seconds: float, connections: int) -> Load:
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(
        *(
            _client(port, request, method == "HEAD", stop, latencies, errors)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return Load(
        "python asyncio", len(latencies) / elapsed, cuts[49] * 1e3, cuts[98] * 1e3,
        len(latencies), len(errors),
    )  # fmt: skip


def main() -> None:
    port, method, path, seconds, connections = sys.argv[1:6]
    result = asyncio.run(_run(int(port), method, path, float(seconds), int(connections)))
    print(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
