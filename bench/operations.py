"""Request rate of GET /healthcheck and GET /metrics against HEAD /v1/images/<id> (same run).

One noauth server with one image and some traffic behind it (so /metrics has series to
render). `metrics` is the default server (a rendered answer is reused for a second);
`metrics, rendered each time` is a second server with --metrics-render-seconds 0, and shows
what one rendering costs. Client threads send each request over keep-alive connections
for a fixed time, in alternating rounds; the best round of each counts. Issue 15 asks
that the two operator endpoints cost no more than a HEAD: each ratio to HEAD should be
at least TARGET.

    .venv/bin/python -m bench operations [--seconds 2] [--rounds 3] [--threads 4] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from bench._support import request_rate, upload_image
from tests.support.server import Server, start_server

TARGET = 0.9  # within the noise of a shared machine: "no more than a HEAD"


def create_image(server: Server) -> str:
    image_id = upload_image(server, "bench-ops")
    with httpx.Client(trust_env=False, timeout=30) as client:
        for path in ("/v1/images", "/v1/images/detail", f"/v1/images/{image_id}", "/nowhere"):
            client.get(f"{server.url}{path}")  # some series for /metrics to render
    return image_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per request kind")
    parser.add_argument("--threads", type=int, default=4, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        server = start_server(Path(tmp) / "ops", "--workers", str(args.workers))
        uncached = start_server(
            Path(tmp) / "ops0", "--workers", str(args.workers), "--metrics-render-seconds", "0"
        )
        try:
            image_id = create_image(server)
            create_image(uncached)
            kinds = {
                "HEAD image": (server, "HEAD", f"/v1/images/{image_id}"),
                "healthcheck": (server, "GET", "/healthcheck"),
                "metrics": (server, "GET", "/metrics"),
                "metrics, rendered each time": (uncached, "GET", "/metrics"),
            }
            best = dict.fromkeys(kinds, 0.0)
            for round_ in range(1, args.rounds + 1):
                for kind, (srv, method, path) in kinds.items():
                    got = request_rate(srv, method, path, args.seconds, args.threads)
                    best[kind] = max(best[kind], got)
                    print(f"round {round_} {kind:28} {got:8.0f} req/s")
        finally:
            server.close()
            uncached.close()
    uncached_ms = 1000 * args.threads / best["metrics, rendered each time"]
    print(f"one /metrics rendering: about {uncached_ms:.1f} ms of latency under this load")
    ok = True
    for kind in ("healthcheck", "metrics", "metrics, rendered each time"):
        ratio = best[kind] / best["HEAD image"]
        verdict = "ok" if ratio >= TARGET else f"BELOW the {TARGET:.0%} target"
        if kind != "metrics, rendered each time":  # shown, not a target
            ok = ok and ratio >= TARGET
        print(f"ratio {kind}/HEAD: {ratio:.2f} ({verdict})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
