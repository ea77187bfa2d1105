"""Servers and sources for the interop suite: real clients against `osimage serve`.

Both servers may fetch `location` / `copy_from` sources from loopback, where a
stdlib HTTP server in a thread serves the source bytes. Tests run once per auth mode
through the `target` fixture.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.interop.helpers import Sources, Target
from tests.support.server import Server, start_server

SOURCE_NETWORK = ("--allow-source-network", "127.0.0.0/8")


@pytest.fixture(scope="session")
def noauth_source_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("interop-noauth"), *SOURCE_NETWORK)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tokens_source_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("interop-tokens"), *SOURCE_NETWORK, auth="tokens")
    yield srv
    srv.stop()


@pytest.fixture(scope="session", params=["noauth", "tokens"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each test taking `target` runs against a noauth server and a tokens server."""
    if request.param == "noauth":
        srv = request.getfixturevalue("noauth_source_server")
        return Target("noauth", srv, token="any-token", project=None, admin=True)
    srv = request.getfixturevalue("tokens_source_server")
    return Target("tokens", srv, token="alice-token", project="p-alice", admin=False)


@pytest.fixture
def gc(target: Target) -> Any:
    """A python-glanceclient v1 client for the target's identity."""
    return target.glance()


@pytest.fixture(scope="session")
def sources() -> Iterator[Sources]:
    """A loopback HTTP origin for `location` and `copy_from` URLs."""
    registry = Sources(base="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            registry.requests.append((self.command, self.path))
            data = registry.blobs.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    registry.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield registry
    httpd.shutdown()
    httpd.server_close()
    thread.join()
