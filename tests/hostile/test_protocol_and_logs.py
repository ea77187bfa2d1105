"""Ambiguous framing, broken requests and real faults: clear answers, one log line each.

Issue 11, items 5 (CL+TE) and 11 (logs): no request sequence makes the server log
"Exception in ASGI application" or a traceback, and an unexpected exception is a
generic 500 that names its request id.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import sqlite3
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import Backend
from tests.support.polling import wait_until
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

REQUEST_ID = re.compile(rb"x-openstack-request-id: (req-[0-9a-f-]+)", re.IGNORECASE)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("protocol"))
    yield server
    server.close()


def exchange(srv: Server, raw: bytes) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def log_length(srv: Server) -> int:
    """The length of the server's log once every access line of earlier requests is in
    it (they are written in batches, up to 50 ms late): a request's own line is waited
    for, and lines keep their order."""
    mark = f"/v1/images/mark-{uuid.uuid4().hex}"
    conn = http.client.HTTPConnection("127.0.0.1", srv.port)
    conn.request("HEAD", mark)
    conn.getresponse().read()
    conn.close()
    wait_until(lambda: mark in srv.log(), "the mark's access line")
    return len(srv.log())


def assert_clean_log(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]
    assert "Exception in ASGI application" not in text, text[-3000:]
    assert "Fatal error" not in text, text[-3000:]


def test_content_length_with_transfer_encoding_is_400_and_closes(srv: Server) -> None:
    before = log_length(srv)
    smuggled = b"GET /v1/images/detail HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (
        b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body
    )
    answer = exchange(srv, raw)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Content-Length and Transfer-Encoding" in answer
    assert b"connection: close" in answer.lower()
    assert answer.count(b"HTTP/1.1 ") == 1  # whatever followed was never answered
    wait_until(lambda: "POST /v1/images 400" in srv.log()[before:], "the access line")
    log = srv.log()[before:]
    assert "GET /v1/images/detail" not in log
    assert_clean_log(log)


def test_each_framing_header_alone_still_works(srv: Server) -> None:
    chunked = (
        b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/octet-stream\r\nx-image-meta-disk_format: raw\r\n"
        b"x-image-meta-container_format: bare\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    assert exchange(srv, chunked).startswith(b"HTTP/1.1 201 ")
    sized = chunked.replace(b"Transfer-Encoding: chunked", b"Content-Length: 5").replace(
        b"5\r\nhello\r\n0\r\n\r\n", b"hello"
    )
    assert exchange(srv, sized).startswith(b"HTTP/1.1 201 ")


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n",
        b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1, 2\r\n\r\n",
        b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        # an upload whose chunked body turns to garbage half-way
        b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\nx-image-meta-disk_format: raw\r\n"
        b"x-image-meta-container_format: bare\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nzz\r\nnot a chunk\r\n",
    ],
)
def test_malformed_requests_are_400_without_a_traceback(srv: Server, raw: bytes) -> None:
    before = len(srv.log())
    answer = exchange(srv, raw)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert_clean_log(srv.log()[before:])


def test_a_client_that_leaves_mid_download_leaves_no_traceback(srv: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    data = b"d" * (8 * 1024 * 1024)
    conn.request(
        "POST",
        "/v1/images",
        body=data,
        headers={
            "Content-Type": "application/octet-stream",
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare",
        },
    )
    resp = conn.getresponse()
    assert resp.status == 201
    image_id = json.loads(resp.read())["image"]["id"]
    conn.close()
    before = len(srv.log())
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(f"GET /v1/images/{image_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    assert get_status(srv, "/v1/images") == 200  # the server is fine, and has logged it all
    assert_clean_log(srv.log()[before:])


def get_status(srv: Server, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_an_unexpected_failure_is_a_generic_500_with_one_log_line(tmp_path: Path) -> None:
    """A real fault: the images table vanishes from under a running server."""
    broken = start_server(tmp_path / "broken", backend=Backend())  # SQLite: we break its file
    try:
        assert get_status(broken, "/v1/images") == 200
        database = broken.data_dir / "osimage.db"
        with sqlite3.connect(database) as db:
            db.execute("ALTER TABLE images RENAME TO images_elsewhere")
        before = len(broken.log())
        for accept, kind in (("application/json", b"application/json"), ("*/*", b"text/plain")):
            answer = exchange(
                broken,
                f"GET /v1/images HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            assert answer.startswith(b"HTTP/1.1 500 "), answer[:300]
            head, _, body = answer.partition(b"\r\n\r\n")
            assert kind in head
            found = REQUEST_ID.search(head)
            assert found, head
            request_id = found.group(1)
            assert request_id in body  # the caller can quote it
            assert b"Traceback" not in body
            assert b"SELECT" not in body  # no SQL, no database details
            assert b"sqlite" not in body.lower()
            lines = [
                line for line in broken.log()[before:].splitlines() if request_id.decode() in line
            ]
            assert len(lines) == 1, lines
            assert " ERROR " in lines[0]
            assert "500" in lines[0]
            assert "OperationalError" in lines[0]  # what failed, for the operator
        assert_clean_log(broken.log()[before:])

        # an access line still in the buffer (written in batches) goes out before an
        # ERROR line that follows it, not after: the log keeps the order of events
        at = {}
        for path in ("/versions", "/v1/images"):  # a success, then a failure
            raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = exchange(broken, raw.encode())
            found = REQUEST_ID.search(answer)
            assert found, answer[:300]
            at[path] = found.group(1).decode()
        lines = broken.log().splitlines()
        ok_at = next(n for n, line in enumerate(lines) if at["/versions"] in line)
        failed_at = next(n for n, line in enumerate(lines) if at["/v1/images"] in line)
        assert ok_at < failed_at, lines[-5:]
    finally:
        broken.close()


def test_garbage_after_an_early_answer_leaves_no_traceback(srv: Server) -> None:
    # the server refuses the headers before reading the body; the body then breaks h11's
    # framing while the answer is already out (uvicorn alone logs an h11 traceback here)
    before = len(srv.log())
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nx-image-meta-min_ram: -1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        sock.sendall(b"zz\r\nnot a chunk\r\n")
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):
                pass
    assert get_status(srv, "/v1/images") == 200
    assert_clean_log(srv.log()[before:])


# -- access lines ---------------------------------------------------------------------------

ACCESS_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO osimage\.access: "
    r"(req-[0-9a-f-]+) (HEAD|GET) (\S+) (\d{3}) \d+\.\dms$",
    re.MULTILINE,
)


def test_each_request_is_one_access_line_in_order(srv: Server) -> None:
    """Access lines bypass `logging` but keep the log's shape, each request's id, and the
    order requests were answered in, whatever connection they came on."""
    before = log_length(srv)
    sent = []
    connections = [http.client.HTTPConnection("127.0.0.1", srv.port) for _ in range(3)]
    try:
        for n in range(60):
            conn = connections[n % 3]
            conn.request("HEAD", f"/v1/images/missing-{n}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404
            sent.append((resp.getheader("x-openstack-request-id"), f"/v1/images/missing-{n}"))
    finally:
        for conn in connections:
            conn.close()
    wait_until(lambda: sent[-1][1] in srv.log()[before:], "the last access line")
    logged = [(m[1], m[3]) for m in ACCESS_LINE.finditer(srv.log()[before:])]
    assert logged == sent


def _log_of_one_detail_request(base: Path, *args: str) -> str:
    """The whole log of a server started with `args` that answered one detail page."""
    server = start_server(base, *args)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        conn.request("GET", "/v1/images/detail")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.close()  # the log is complete once the server has stopped
    return server.log()


def test_a_warning_level_log_has_no_access_lines(tmp_path: Path) -> None:
    assert "osimage.access" not in _log_of_one_detail_request(tmp_path, "--log-level", "warning")
    loud = _log_of_one_detail_request(tmp_path / "loud")
    logged = [m[3] for m in ACCESS_LINE.finditer(loud)]
    assert logged.count("/v1/images/detail") == 1  # the same request, logged at info
