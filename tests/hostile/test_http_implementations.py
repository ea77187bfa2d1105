"""Both HTTP implementations (`--http h11`, `--http httptools`) give the same answers.

The other hostile tests run on the default implementation (or `OSIMAGE_HTTP`); these
pin, for each, the answers that the guarded protocols in `osimage.server.connections`
make themselves rather than the app: the header deadline, 431, 400 for framing errors,
and 501 for a method the parser may not know (issue 14).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.hostile.test_protocol_and_logs import exchange
from tests.support.polling import wait_until
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 2


@pytest.fixture(scope="module", params=["h11", "httptools"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    implementation = str(request.param)
    server = start_server(
        tmp_path_factory.mktemp(implementation),
        "--http",
        implementation,
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--max-header-bytes",
        "4096",
    )
    yield server
    server.close()


def split(answer: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_clean_log(srv: Server, before: int) -> None:
    log = srv.log()[before:]
    assert "Traceback" not in log, log[-3000:]
    assert "Exception in ASGI application" not in log, log[-3000:]


@pytest.mark.parametrize("path", ["/v1/nowhere", "/v1/images/x/y/z", "/v2/nowhere?a=b"])
def test_an_unknown_method_is_501_in_the_shape_accept_asks_for(srv: Server, path: str) -> None:
    before = len(srv.log())
    raw = f"BREW {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
    status, headers, body = split(exchange(srv, raw.encode()))
    assert status.startswith(b"HTTP/1.1 501 "), status
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-openstack-request-id"].startswith(b"req-")
    document = json.loads(body)
    assert document["code"] == "501 Not Implemented"
    assert document["message"] == "The method BREW is not implemented."
    plain = exchange(srv, b"BREW /v1/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 501 ")
    assert b"501 Not Implemented" in split(plain)[2]
    line = f"BREW {path.partition('?')[0]} 501"
    wait_until(lambda: line in srv.log()[before:], "the access line")  # written after the answer
    assert_clean_log(srv, before)


def test_an_unknown_method_on_a_known_path_is_what_the_spec_says(srv: Server) -> None:
    collection = exchange(srv, b"BREW /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, headers, _body = split(collection)
    assert status.startswith(b"HTTP/1.1 405 "), status
    assert headers[b"allow"] == b"GET, POST"
    shared = exchange(srv, b"BREW /v1/shared-images/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _headers, body = split(shared)
    assert status.startswith(b"HTTP/1.1 200 "), status
    assert json.loads(body) == {"shared_images": []}


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"BREW /v1/images\r\n\r\n",  # no HTTP version
        b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n",
        b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1, 2\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(srv: Server, raw: bytes) -> None:
    before = len(srv.log())
    assert exchange(srv, raw).startswith(b"HTTP/1.1 400 ")
    assert_clean_log(srv, before)


def test_content_length_with_transfer_encoding_is_the_apps_400(srv: Server) -> None:
    raw = (
        b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    answer = exchange(srv, raw)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Length and Transfer-Encoding" in answer


def test_a_head_past_max_header_bytes_is_431(srv: Server) -> None:
    raw = b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 6000
    answer = exchange(srv, raw)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"4096 bytes" in answer
    # httptools also counts a head that arrived whole (h11 only limits what it buffers
    # while the head is incomplete, so one segment of 6 KB passes there)
    whole = exchange(srv, raw + b"\r\n\r\n")
    if "httptools" in srv.args:
        assert whole.startswith(b"HTTP/1.1 431 "), whole[:100]


def test_a_partial_head_gets_408_after_the_deadline(srv: Server) -> None:
    started = time.monotonic()
    answer = exchange(srv, b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert time.monotonic() - started < HEADER_TIMEOUT + 10


def test_pipelined_requests_and_head_are_answered_in_order(srv: Server) -> None:
    request = b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = b"HEAD /v1/images/detail HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    last = b"GET /versions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answer = exchange(srv, request + head + last)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"405", b"200"]


def test_an_unknown_method_pipelined_behind_a_request_ends_the_connection_cleanly(
    srv: Server,
) -> None:
    before = len(srv.log())
    first = b"GET /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answer = exchange(srv, first + b"BREW /v1/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses[0] == b"200"
    assert statuses[1:] in ([], [b"501"])  # h11 answers both; httptools the first
    assert_clean_log(srv, before)
