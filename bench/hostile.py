"""A well-behaved client's latency while hostile tenants load the server (issue 11).

One ``osimage serve`` (SQLite and files, default limits, loopback copy sources allowed)
serves a well-behaved client that loops over list, upload (64 KiB), HEAD, download and
delete, pausing a little between rounds. It runs alone first (the quiet run), then for
``--seconds`` beside an attacker process that keeps up, all at once and all on loopback:

- idle and half-open sockets: connections that send nothing, half a request line or
  half a header block, reopened when the server closes them;
- stalled uploads: a declared 100 MiB body of which 64 KiB is sent, then nothing;
- list requests with ever new filter shapes (distinct property keys and values), paced
  at 50 a second: the attack is on memory and caches, not a request-rate flood (which
  rate limiting in front of the service is for);
- a copy_from flood against a slow loopback HTTP source (40 KiB/s per copy).

Every attacker loop is bounded in count as well as in time. Figures: the well-behaved
client's p99 against the quiet run's (target: within 3x), the server's peak RSS over the
whole run (target: under 300 MiB) and the well-behaved client's failed requests
(target: 0). What the attacker saw is printed as notes.

    .venv/bin/python -m bench hostile [--seconds 60] [--quiet-seconds 20] [--attacks idle,...]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import importlib
import json
import multiprocessing
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._support import (
    MIB,
    Figure,
    PeakRss,
    add_json_argument,
    judged,
    print_table,
    start_bench_server,
    write_figures,
)

SECTION = "hostile load"
P99_TARGET = 3.0
RSS_TARGET_MIB = 300
UPLOAD = b"w" * (64 * 1024)

# bounds of the attacker (per run, whatever --seconds says)
IDLE_SOCKETS = 1000  # open at once
IDLE_OPENS_MAX = 20_000
STALLED_UPLOADS = 20
STALLED_OPENS_MAX = 500
LIST_WORKERS = 4
LIST_RATE = 50.0  # list requests per second at most: new shapes, not a CPU flood
LIST_REQUESTS_MAX = 50_000
COPY_RATE = 5.0  # copy_from requests per second
COPIES_MAX = 300
SOURCE_SIZE = 1 * MIB
SOURCE_STEP = 4096  # bytes per 0.1 s: 40 KiB/s


# -- the well-behaved client ------------------------------------------------------------


@dataclass
class Client:
    """Loops over the common calls on one keep-alive connection, timing each request."""

    port: int
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0  # a kept-alive connection found closed: reopened, request resent
    _conn: http.client.HTTPConnection | None = None

    def _request(
        self, method: str, path: str, expected: int, body: bytes | None = None, **headers: str
    ) -> tuple[bytes, dict[str, str]]:
        for attempt in range(2):  # a kept-alive connection the server closed is reopened once
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            started = time.perf_counter()
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except ConnectionError as exc:
                self._conn.close()
                self._conn = None
                if attempt == 0:
                    self.reconnects += 1
                    continue
                self.failures[f"{method} {type(exc).__name__}"] += 1
                return b"", {}
            except OSError as exc:
                self._conn.close()
                self._conn = None
                self.failures[f"{method} {type(exc).__name__}"] += 1
                return b"", {}
            self.latencies.append(time.perf_counter() - started)
            if resp.status != expected:
                self.failures[f"{method} {resp.status}"] += 1
            return data, {k.lower(): v for k, v in resp.getheaders()}
        return b"", {}

    def round(self) -> None:
        self._request("GET", "/v1/images/detail?limit=10", 200)
        data, _ = self._request(
            "POST",
            "/v1/images",
            201,
            body=UPLOAD,
            **{
                "Content-Type": "application/octet-stream",
                "x-image-meta-name": "well-behaved",
                "x-image-meta-disk_format": "raw",
                "x-image-meta-container_format": "bare",
            },
        )
        if not data:
            return
        image_id = json.loads(data)["image"]["id"]
        self._request("HEAD", f"/v1/images/{image_id}", 200)
        got, _ = self._request("GET", f"/v1/images/{image_id}", 200)
        if got and got != UPLOAD:
            self.failures["GET wrong data"] += 1
        self._request("DELETE", f"/v1/images/{image_id}", 200)

    def run(self, seconds: float, pause: float = 0.02) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.round()
            time.sleep(pause)
        if self._conn is not None:
            self._conn.close()


def p99_ms(latencies: list[float]) -> float:
    if len(latencies) < 2:
        return float("nan")
    return statistics.quantiles(latencies, n=100)[98] * 1000


# -- the attacker (its own process) -------------------------------------------------------


async def _slow_source(
    deadline: float, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """An HTTP source that sends SOURCE_SIZE bytes at 40 KiB/s (HEAD: headers only);
    it hangs up on every copy when the run ends."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: " + str(SOURCE_SIZE).encode() + b"\r\nConnection: close\r\n\r\n"
        )
        if not head.startswith(b"HEAD"):
            for _ in range(SOURCE_SIZE // SOURCE_STEP):
                if time.monotonic() >= deadline:
                    break
                writer.write(b"s" * SOURCE_STEP)
                await writer.drain()
                await asyncio.sleep(0.1)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _hold_socket(port: int, kind: int, stats: Counter[str], deadline: float) -> None:
    """One idle or half-open socket, held until the server closes it or time is up."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        stats["idle connect failed"] += 1
        await asyncio.sleep(0.5)
        return
    stats["idle opened"] += 1
    try:
        if kind == 1:
            writer.write(b"GET /v1/ima")
        elif kind == 2:
            writer.write(b"GET /v1/images HTTP/1.1\r\nHost: x\r\nX-Slow: not-yet")
        remaining = deadline - time.monotonic()
        answer = await asyncio.wait_for(reader.read(65536), timeout=max(0.1, remaining))
        stats["idle closed by server" if not answer else f"idle answered {answer[9:12]!r}"] += 1
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def _idle_sockets(port: int, stats: Counter[str], deadline: float) -> None:
    opened = 0

    async def slot(n: int) -> None:
        nonlocal opened
        while time.monotonic() < deadline and opened < IDLE_OPENS_MAX:
            opened += 1
            await _hold_socket(port, n % 3, stats, deadline)

    await asyncio.gather(*(slot(n) for n in range(IDLE_SOCKETS)))


async def _stalled_upload(port: int, stats: Counter[str], deadline: float) -> None:
    opened = 0
    while time.monotonic() < deadline and opened < STALLED_OPENS_MAX // STALLED_UPLOADS:
        opened += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["stalled connect failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["stalled uploads started"] += 1
        writer.write(
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n"
            b"Content-Length: " + str(100 * MIB).encode() + b"\r\n\r\n" + b"u" * 65536
        )
        try:
            remaining = deadline - time.monotonic()
            answer = await asyncio.wait_for(reader.read(65536), timeout=max(0.1, remaining))
            stats[f"stalled upload ended: {answer[9:12].decode() or 'closed'}"] += 1
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def _request(port: int, raw: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        status_line = await reader.readline()
        await reader.read()  # Connection: close
        return int(status_line.split()[1])
    finally:
        writer.close()


async def _filter_shapes(port: int, stats: Counter[str], deadline: float) -> None:
    sent = 0

    async def worker(w: int) -> None:
        nonlocal sent
        rng = random.Random(w)
        while time.monotonic() < deadline and sent < LIST_REQUESTS_MAX:
            sent += 1
            keys = rng.randint(1, 12)
            query = "&".join(
                f"property-k{rng.getrandbits(40):x}=v{rng.getrandbits(20):x}" for _ in range(keys)
            )
            if rng.random() < 0.5:
                query += f"&name=n{rng.getrandbits(30):x}&size_min={rng.randint(0, 10**6)}"
            raw = f"GET /v1/images/detail?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            try:
                stats[f"list {await _request(port, raw.encode())}"] += 1
            except (OSError, ValueError, IndexError):
                stats["list failed"] += 1
            await asyncio.sleep(LIST_WORKERS / LIST_RATE)

    await asyncio.gather(*(worker(w) for w in range(LIST_WORKERS)))


async def _copy_flood(port: int, source_port: int, stats: Counter[str], deadline: float) -> None:
    for n in range(COPIES_MAX):
        if time.monotonic() >= deadline:
            break
        raw = (
            f"POST /v1/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"x-image-meta-name: flood-{n}\r\nx-image-meta-disk_format: raw\r\n"
            f"x-image-meta-container_format: bare\r\n"
            f"x-glance-api-copy-from: http://127.0.0.1:{source_port}/blob-{n}\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        try:
            stats[f"copy_from {await _request(port, raw.encode())}"] += 1
        except (OSError, ValueError, IndexError):
            stats["copy_from failed"] += 1
        await asyncio.sleep(1 / COPY_RATE)


ATTACKS = ("idle", "stalled", "lists", "copies")


async def _attack(port: int, seconds: float, attacks: tuple[str, ...]) -> dict[str, int]:
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    source = await asyncio.start_server(functools.partial(_slow_source, deadline), "127.0.0.1", 0)
    source_port = source.sockets[0].getsockname()[1]
    async with source:
        loops = []
        if "idle" in attacks:
            loops.append(_idle_sockets(port, stats, deadline))
        if "stalled" in attacks:
            loops += [_stalled_upload(port, stats, deadline) for _ in range(STALLED_UPLOADS)]
        if "lists" in attacks:
            loops.append(_filter_shapes(port, stats, deadline))
        if "copies" in attacks:
            loops.append(_copy_flood(port, source_port, stats, deadline))
        await asyncio.gather(*loops)
        await asyncio.sleep(0.3)  # the source's copies notice the deadline and hang up
    return dict(stats)


def attacker(port: int, seconds: float, attacks: tuple[str, ...], results: Any) -> None:
    """The attacker process: runs every hostile loop until `seconds` pass."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_SOCKETS + STALLED_UPLOADS + COPIES_MAX + 256
    if hard == resource.RLIM_INFINITY or hard >= wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    results.put(asyncio.run(_attack(port, seconds, attacks)))


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hostile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the hostile run")
    parser.add_argument("--quiet-seconds", type=float, default=20.0, help="the quiet run")
    parser.add_argument(
        "--attacks",
        default=",".join(ATTACKS),
        help=f"comma-separated, of {', '.join(ATTACKS)} (default: all at once)",
    )
    add_json_argument(parser)
    args = parser.parse_args(argv)
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    if unknown := set(attacks) - set(ATTACKS):
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")

    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        server = start_bench_server(Path(tmp) / "hostile", "--allow-source-network", "127.0.0.1/32")
        try:
            assert server.proc is not None
            with PeakRss(server.proc.pid, interval=0.05) as rss:
                Client(server.port).run(2)  # warm-up
                quiet = Client(server.port)
                quiet.run(args.quiet_seconds)
                context = multiprocessing.get_context("spawn")
                results = context.Queue()
                # by its module's name, so that the spawned child imports it (not `__main__`)
                target = importlib.import_module("bench.hostile").attacker
                attack = context.Process(
                    target=target, args=(server.port, args.seconds, attacks, results)
                )
                attack.start()
                time.sleep(min(5.0, args.seconds / 6))  # let the attack build up
                loud = Client(server.port)
                runner = threading.Thread(target=loud.run, args=(args.seconds - 5,))
                runner.start()
                runner.join()
                seen: dict[str, int] = results.get(timeout=args.seconds + 120)
                attack.join(timeout=60)
            log = server.log()
        finally:
            server.close()

    quiet_p99, loud_p99 = p99_ms(quiet.latencies), p99_ms(loud.latencies)
    failures = sum(loud.failures.values()) + sum(quiet.failures.values())
    tracebacks = log.count("Traceback")
    figures: list[Figure] = [
        judged(
            SECTION,
            "well-behaved client p99 under hostile load",
            loud_p99,
            "ms",
            baseline="quiet run p99",
            baseline_value=quiet_p99,
            ratio=loud_p99 / quiet_p99,
            limit=P99_TARGET,
            higher_is_better=False,
            target=f"<= {P99_TARGET:g}x",
            note=(
                f"{len(loud.latencies)} requests under load (p50 "
                f"{statistics.median(loud.latencies) * 1000:.1f} ms), {len(quiet.latencies)} "
                f"quiet (p50 {statistics.median(quiet.latencies) * 1000:.1f} ms); "
                f"kept-alive connections found closed and reopened: {loud.reconnects}"
            ),
        ),
        judged(
            SECTION,
            "server peak RSS",
            rss.peak / MIB,
            "MiB",
            limit=RSS_TARGET_MIB,
            higher_is_better=False,
            target=f"< {RSS_TARGET_MIB} MiB",
            note=f"at start {rss.start_rss / MIB:.0f} MiB",
        ),
        judged(
            SECTION,
            "well-behaved client failed requests",
            failures,
            "requests",
            limit=0,
            higher_is_better=False,
            target="0",
            note=", ".join(f"{k}: {v}" for k, v in (loud.failures + quiet.failures).items()),
        ),
        judged(
            SECTION,
            "tracebacks in the server log",
            tracebacks,
            "",
            limit=0,
            higher_is_better=False,
            target="0",
        ),
    ]
    title = f"hostile load ({', '.join(attacks)}): {args.seconds:g} s"
    print_table(figures, f"{title} against a {args.quiet_seconds:g} s quiet run")
    print("\nwhat the attacker saw:")
    for key, value in sorted(seen.items()):
        print(f"  {key}: {value}")
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
