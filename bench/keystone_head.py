"""HEAD request rate of a keystone-mode server against a tokens-mode server (same run).

Needs the test Keystone (`e=$(shared/services/keystone-aio start); eval "$e"`). Both
servers get one image; client threads then send HEAD /v1/images/<id> over keep-alive
connections for a fixed time, several alternating rounds, and the best round of each
mode counts. With the validation cache working, keystone mode should reach at least
80% of tokens mode.

    .venv/bin/python -m bench keystone_head [--seconds 3] [--rounds 3] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import httpx

from bench._support import request_rate, upload_image
from tests.support.server import start_server

TARGET = 0.8


def keystone_token() -> str:
    """A token for alice, scoped to her project."""
    auth_url = os.environ["OSIMAGE_KEYSTONE_AUTH_URL"].rstrip("/")
    domain = {"name": os.environ.get("KEYSTONE_AIO_DOMAIN", "Default")}
    user = {
        "name": os.environ.get("KEYSTONE_AIO_ALICE_USERNAME", "alice"),
        "password": os.environ.get("KEYSTONE_AIO_ALICE_PASSWORD", "alice-secret"),
        "domain": domain,
    }
    project = {"name": os.environ.get("KEYSTONE_AIO_ALICE_PROJECT", "p-alice"), "domain": domain}
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": project},
        }
    }
    with httpx.Client(trust_env=False, timeout=30) as client:
        resp = client.post(f"{auth_url}/auth/tokens?nocatalog", json=body)
    resp.raise_for_status()
    return resp.headers["X-Subject-Token"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients")
    args = parser.parse_args()
    if not os.environ.get("OSIMAGE_KEYSTONE_AUTH_URL"):
        print('needs the test Keystone: e=$(shared/services/keystone-aio start); eval "$e"')
        return 2
    with tempfile.TemporaryDirectory(prefix="osimage-bench-") as tmp:
        base = Path(tmp)
        tokens = start_server(base / "tokens", auth="tokens")
        keystone = start_server(base / "keystone", "--auth", "keystone")
        try:
            ks_token = keystone_token()
            modes = {
                "tokens": (tokens, "alice-token"),
                "keystone": (keystone, ks_token),
            }
            images = {
                mode: upload_image(srv, "bench-head", token) for mode, (srv, token) in modes.items()
            }
            best = dict.fromkeys(modes, 0.0)
            for round_ in range(1, args.rounds + 1):
                for mode, (srv, token) in modes.items():
                    rate = request_rate(
                        srv,
                        "HEAD",
                        f"/v1/images/{images[mode]}",
                        args.seconds,
                        args.threads,
                        {"X-Auth-Token": token},
                    )
                    best[mode] = max(best[mode], rate)
                    print(f"round {round_} {mode:8} {rate:8.0f} HEAD/s")
        finally:
            tokens.stop()
            keystone.stop()
    ratio = best["keystone"] / best["tokens"]
    print(f"tokens   {best['tokens']:8.0f} HEAD/s (best round)")
    print(f"keystone {best['keystone']:8.0f} HEAD/s (best round)")
    verdict = "ok" if ratio >= TARGET else f"BELOW the {TARGET:.0%} target"
    print(f"ratio keystone/tokens: {ratio:.2f} ({verdict})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
