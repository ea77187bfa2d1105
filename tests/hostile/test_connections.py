"""Idle, half-open and surplus connections against a real `osimage serve` (issue 11, item 1).

The server gets short timeouts so that the tests wait seconds, not minutes; what is
asserted is that the server closes what it must and keeps answering everyone else.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 3
KEEP_ALIVE_TIMEOUT = 2
HALF_REQUEST_LINE = b"GET /v1/ima"
HALF_HEADERS = b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: not-yet"


@pytest.fixture(scope="module")
def timeouts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("timeouts"),
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--keep-alive-timeout",
        str(KEEP_ALIVE_TIMEOUT),
        "--max-header-bytes",
        "8192",
    )
    yield srv
    srv.close()


def connect(srv: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=30)


def get_list(srv: Server) -> int:
    """One well-behaved request on a new connection; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    try:
        conn.request("GET", "/v1/images")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def read_until_closed(sock: socket.socket, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def wait_all_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it; those still open are missing."""
    received = {sock: b"" for sock in socks}
    open_ = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                sock = ready
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[sock] += chunk
                else:
                    selector.unregister(sock)
                    open_.discard(sock)
    return {sock: data for sock, data in received.items() if sock not in open_}


def test_half_open_sockets_are_closed_while_others_are_served(timeouts_server: Server) -> None:
    srv = timeouts_server
    # up to 2100 sockets, within this process's open file limit (the server raises its own)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_kind = min(700, (soft - 300) // 3)
    assert per_kind >= 100, f"the open file limit ({soft}) is too low for this test"
    silent = [connect(srv) for _ in range(per_kind)]
    half_line = [connect(srv) for _ in range(per_kind)]
    half_head = [connect(srv) for _ in range(per_kind)]
    for sock in half_line:
        sock.sendall(HALF_REQUEST_LINE)
    for sock in half_head:
        sock.sendall(HALF_HEADERS)
    everyone = silent + half_line + half_head
    try:
        # the server answers a well-behaved client while all of them hang
        assert [get_list(srv) for _ in range(10)] == [200] * 10
        closed = wait_all_closed(everyone, timeout=HEADER_TIMEOUT + 60)
        assert len(closed) == len(everyone), f"{len(everyone) - len(closed)} sockets still open"
        # a partial request is told why; a connection that sent nothing just ends
        assert all(closed[s].startswith(b"HTTP/1.1 408 ") for s in half_line + half_head)
        assert all(closed[s] == b"" for s in silent)
        assert get_list(srv) == 200
    finally:
        for sock in everyone:
            sock.close()
    log = srv.log()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


def test_a_header_dribbled_a_byte_at_a_time_still_meets_the_deadline(
    timeouts_server: Server,
) -> None:
    # the deadline covers the whole head, so trickling bytes does not extend it
    with connect(timeouts_server) as sock:
        sock.sendall(b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        closed_early = False
        for _ in range(HEADER_TIMEOUT * 10):  # three times the deadline, in 0.3 s steps
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed_early = True
                break
            time.sleep(0.3)
        if not closed_early:
            answer = read_until_closed(sock, timeout=5)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_keep_alive_connection_is_reused_then_closed_when_idle(timeouts_server: Server) -> None:
    with connect(timeouts_server) as sock:
        request = b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(request + request)  # two requests on one connection: it is kept alive
        sock.settimeout(30)
        answers = b""
        while answers.count(b"HTTP/1.1 200 OK") < 2:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
        # then nothing more is sent: the server ends the idle connection
        assert read_until_closed(sock, timeout=KEEP_ALIVE_TIMEOUT + 30).count(b"HTTP/1.1") == 0


def test_an_oversized_header_block_is_431(timeouts_server: Server) -> None:
    with connect(timeouts_server) as sock:
        sock.sendall(b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 20000)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"8192 bytes" in answer
    assert "Traceback" not in timeouts_server.log()


def test_connections_past_the_cap_are_refused_cleanly(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "capped", "--max-connections", "20")
    held: list[socket.socket] = []
    try:
        # fill every slot; a request on one of them proves the server still counts them
        held = [connect(srv) for _ in range(20)]
        held[0].sendall(b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        held[0].settimeout(30)
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        for _ in range(5):
            with connect(srv) as extra:
                answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
            assert b"retry-after: 1" in answer.lower()
            assert b"connection: close" in answer.lower()
        for sock in held[:10]:
            sock.close()
        # freed slots take new clients again (the server notices the closes shortly)
        statuses = []
        for _ in range(100):
            try:
                statuses.append(get_list(srv))
            except (ConnectionError, http.client.HTTPException):
                statuses.append(0)
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
        assert statuses[-1] == 200, statuses
    finally:
        for sock in held:
            sock.close()
        srv.close()
    log = srv.log()
    assert "max_connections" in log
    assert "Traceback" not in log


def _fit_in_child(soft: int, hard: int, wanted: int) -> tuple[int, int]:
    """Run `fit_descriptor_limit` in a process whose open file limit is soft/hard."""
    code = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        from osimage.server.connections import fit_descriptor_limit
        allowed = fit_descriptor_limit({wanted})
        print(allowed, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    allowed, soft_after = done.stdout.split()
    return int(allowed), int(soft_after)


def test_the_open_file_limit_is_raised_for_the_cap_or_the_cap_lowered() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1000:
        pytest.skip(f"this machine's hard open file limit ({hard}) is too low to test")
    # room under the hard limit: the soft limit is raised to fit 300 connections
    assert _fit_in_child(300, 1000, 300) == (300, 856)
    # no room: the cap comes down to what the hard limit leaves
    assert _fit_in_child(600, 600, 4096) == (172, 600)


def test_a_body_trickled_after_an_early_answer_meets_the_deadline(timeouts_server: Server) -> None:
    # the server answers 400 before reading the body; the client keeps sending the body a
    # byte at a time, which alone would keep cancelling uvicorn's keep-alive timer
    with connect(timeouts_server) as sock:
        sock.sendall(
            b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nx-image-meta-min_ram: -1\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        closed = False
        for _ in range(HEADER_TIMEOUT * 10):  # three times the deadline, in 0.3 s steps
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.3)
        if not closed:  # the writes may all have fitted in buffers: the close shows here
            with contextlib.suppress(ConnectionResetError):
                read_until_closed(sock, timeout=5)  # the rest of the 400's body, then EOF
