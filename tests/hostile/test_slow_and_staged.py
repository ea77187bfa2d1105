"""Against a real server: uploads trickling below `--upload-min-rate`, and v2 staged data
left unimported past `--stage-ttl`."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, unique
from tests.e2e.v2_client import OCTETS, V2
from tests.hostile.test_uploads import read_all, reserve, send_chunk, status_of, wait_until
from tests.support.http import request
from tests.support.server import Server, start_server
from tests.support.stored import stored_for

pytestmark = pytest.mark.e2e

# windows of 2 s of waiting, each needing 20 000 bytes; a 0.25 s gap never trips body_timeout
SLOW_ARGS = ("--body-timeout", "2", "--upload-min-rate", "10000", "--header-timeout", "2")


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("slow"), *SLOW_ARGS)
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


def open_chunked(server: Server, method: str, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    return sock


def trickle(
    sock: socket.socket, *, piece: int, every: float, limit: float = 20.0
) -> tuple[bytes, float]:
    """Send `piece` bytes every `every` seconds until the server answers; the answer (all
    it sends until it closes the connection) and the seconds until it began."""
    started = time.monotonic()
    deadline = started + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], every)
        if ready:
            break
        try:
            send_chunk(sock, b"t" * piece)
        except OSError:  # closed under us: the answer is in the socket
            break
    else:
        raise AssertionError(f"no answer within {limit} s")
    answered = time.monotonic() - started
    return read_all(sock), answered


def finish(sock: socket.socket) -> bytes:
    sock.sendall(b"0\r\n\r\n")
    return sock.recv(65536)


def test_a_v1_upload_trickling_below_the_minimum_rate_is_a_408_and_killed(slow: Server) -> None:
    image_id = reserve(slow)
    sock = open_chunked(slow, "PUT", f"/v1/images/{image_id}")
    try:
        send_chunk(sock, b"x" * 1000)
        wait_until(lambda: status_of(slow, image_id) == "saving", "the upload started")
        answer, took = trickle(sock, piece=1000, every=0.25)  # 4000 B/s, no gap of 2 s
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"upload_min_rate" in answer
    assert b"body_timeout" not in answer
    assert took < 4, took  # the first window of 2 s ends it
    # as the body-timeout path leaves it: killed, nothing stored
    assert status_of(slow, image_id) == "killed"
    wait_until(lambda: stored_for(slow, image_id) == [], "partial data removed")


@pytest.mark.parametrize("route", ["file", "stage"])
def test_a_v2_upload_trickling_below_the_minimum_rate_is_a_408_and_queued_again(
    slow: Server, route: str
) -> None:
    v2 = V2(Api(slow.url))
    image_id = v2.create(name=unique("v2-trickle"))["id"]
    sock = open_chunked(slow, "PUT", f"/v2/images/{image_id}/{route}")
    try:
        send_chunk(sock, b"x" * 1000)
        wait_until(lambda: v2.show(image_id).json()["status"] == "saving", "the upload started")
        answer, _ = trickle(sock, piece=1000, every=0.25)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"upload_min_rate" in answer
    shown = v2.show(image_id).json()
    assert (shown["status"], shown["size"], shown["checksum"]) == ("queued", None, None)
    wait_until(lambda: stored_for(slow, image_id) == [], "partial data removed")
    assert v2.upload(image_id, b"second try").status == 204  # queued: it may be sent again
    assert v2.download(image_id).body == b"second try"


def test_an_upload_above_the_minimum_rate_with_pauses_succeeds(slow: Server) -> None:
    image_id = reserve(slow)
    sock = open_chunked(slow, "PUT", f"/v1/images/{image_id}")
    try:
        for _ in range(4):  # 50 000 bytes, then 1.5 s of silence: about 33 000 B/s
            send_chunk(sock, b"p" * 50_000)
            time.sleep(1.5)
        answer = finish(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert status_of(slow, image_id) == "active"
    _, headers, _ = request(slow, "HEAD", f"/v1/images/{image_id}", {})
    assert headers["x-image-meta-size"] == "200000"


# -- staged data past --stage-ttl -------------------------------------------------------------

TTL = 6.0  # the sweep runs every 1.5 s


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Server]:
    # two workers: both run the stage sweep on the one database
    srv = start_server(tmp_path, "--stage-ttl", f"{TTL:g}", "--workers", "2")
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


def stage(v2: V2, image_id: str, data: bytes) -> None:
    resp = v2.call("PUT", f"images/{image_id}/stage", headers=OCTETS, data=data)
    assert resp.status == 204, resp
    assert v2.show(image_id).json()["status"] == "uploading"


def import_staged(v2: V2, image_id: str) -> None:
    body = {"method": {"name": "glance-direct"}}
    resp = v2.call("POST", f"images/{image_id}/import", body)
    assert resp.status == 202, resp
    wait_until(lambda: v2.show(image_id).json()["status"] == "active", "imported")


def test_staged_data_past_the_ttl_goes_and_younger_data_stays(staging: Server) -> None:
    v2 = V2(Api(staging.url))
    old = v2.create(name=unique("staged-old"))["id"]
    young = v2.create(name=unique("staged-young"))["id"]
    stage(v2, old, b"old staged data")
    assert stored_for(staging, old) != []  # the staged data exists
    time.sleep(TTL / 2)
    stage(v2, young, b"young staged data")
    assert stored_for(staging, young) != []

    wait_until(
        lambda: v2.show(old).json()["status"] == "queued", "the old stage expired", timeout=20
    )
    # at most TTL / 2 + one sweep interval later: the young one is well inside its TTL
    assert v2.show(young).json()["status"] == "uploading"
    assert stored_for(staging, young) != []
    shown = v2.show(old).json()
    assert (shown["size"], shown["checksum"], shown["os_hash_value"]) == (None, None, None)
    assert stored_for(staging, old) == []
    assert v2.download(old).status == 204  # no data

    import_staged(v2, young)  # kept data imports
    assert v2.download(young).body == b"young staged data"

    stage(v2, old, b"staged again")  # queued again: it can be staged and imported anew
    import_staged(v2, old)
    assert v2.download(old).body == b"staged again"

    log = staging.log()
    sweeps = [line for line in log.splitlines() if "stage sweep" in line and old in line]
    assert len(sweeps) == 1, sweeps  # one of the two workers won it
    assert "stage_ttl" in sweeps[0]
    assert not re.search(rf"stage sweep.*{young}", log)
