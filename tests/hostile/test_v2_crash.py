"""Crash and restart with Image API v2's statuses (issue 12 over issue 11's crash sweep):
SIGKILL while staging, with data staged, while a web-download connects to its source and
while it transfers; after the restart no data is orphaned and no image stays in a
transitional status (docs/protocol.md, "Crash recovery of v2 statuses")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, unique
from tests.e2e.v2_client import OCTETS, V2
from tests.hostile.test_copies import SLOW
from tests.hostile.test_uploads import send_chunk, stored_bytes, wait_until
from tests.support.server import Server, start_server
from tests.support.source import Script, Source, serve_source
from tests.support.stored import store_kind, stored_for

pytestmark = pytest.mark.e2e

DATA = b"staged before the crash " * 1000


@pytest.fixture
def source() -> Iterator[Source]:
    with serve_source() as src:
        src.scripts["/slow"] = SLOW
        src.scripts["/late"] = Script(str(len(DATA)), str(len(DATA)), DATA, delay=120)
        src.scripts["/ready"] = Script(str(len(DATA)), str(len(DATA)), DATA)
        yield src


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32")
    yield srv
    srv.close()


def _status(v2: V2, image_id: str) -> str:
    return str(v2.show(image_id).json()["status"])


def test_staged_data_survives_a_crash_and_imports_afterwards(server: Server) -> None:
    v2 = V2(Api(server.url))
    image_id = v2.create(name=unique("v2-staged"))["id"]
    resp = v2.call("PUT", f"images/{image_id}/stage", headers=OCTETS, data=DATA)
    assert resp.status == 204, resp
    assert stored_for(server, image_id) != []
    server.kill()
    server.start()
    assert _status(v2, image_id) == "uploading"  # a resting status: the data is whole
    assert stored_for(server, image_id) != []
    body = {"method": {"name": "glance-direct"}}
    assert v2.call("POST", f"images/{image_id}/import", body).status == 202
    assert _status(v2, image_id) == "active"
    assert v2.download(image_id).body == DATA


def test_a_crash_while_staging_kills_the_image_and_leaves_nothing(server: Server) -> None:
    v2 = V2(Api(server.url))
    image_id = v2.create(name=unique("v2-staging"))["id"]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        sock.sendall(
            (
                f"PUT /v2/images/{image_id}/stage HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        send_chunk(sock, b"x" * 300_000)
        wait_until(lambda: _status(v2, image_id) == "saving", "staging started")
        if store_kind(server) == "file":  # the data existed
            wait_until(lambda: stored_bytes(server, image_id) == 300_000, "data stored")
        server.kill()
    finally:
        sock.close()
    server.start()
    assert _status(v2, image_id) == "killed"
    wait_until(lambda: stored_for(server, image_id) == [], "partial data removed")
    assert v2.call("DELETE", f"images/{image_id}").status == 204


def test_a_crash_while_a_web_download_connects_requeues_the_image(
    server: Server, source: Source
) -> None:
    v2 = V2(Api(server.url))
    image_id = v2.create(name=unique("v2-connecting"))["id"]
    body = {"method": {"name": "web-download", "uri": source.url("/late")}}
    assert v2.call("POST", f"images/{image_id}/import", body).status == 202
    wait_until(lambda: source.active == 1, "the source was asked")
    assert _status(v2, image_id) == "importing"
    server.kill()
    server.start()
    shown = v2.show(image_id).json()
    assert (shown["status"], shown["size"]) == ("queued", None)
    assert stored_for(server, image_id) == []
    assert "stranded web-download" in server.log()
    body = {"method": {"name": "web-download", "uri": source.url("/ready")}}
    assert v2.call("POST", f"images/{image_id}/import", body).status == 202  # may try again
    wait_until(lambda: _status(v2, image_id) == "active", "the second import finished")
    assert v2.download(image_id).body == DATA


def test_a_crash_mid_web_download_kills_the_image_and_leaves_nothing(
    server: Server, source: Source
) -> None:
    v2 = V2(Api(server.url))
    image_id = v2.create(name=unique("v2-transfer"))["id"]
    body = {"method": {"name": "web-download", "uri": source.url("/slow")}}
    assert v2.call("POST", f"images/{image_id}/import", body).status == 202
    wait_until(lambda: source.served > 300_000, "data copied")
    if store_kind(server) == "file":  # the data existed
        wait_until(lambda: stored_bytes(server, image_id) > 0, "partial data stored")
    server.kill()
    server.start()
    assert _status(v2, image_id) == "killed"
    wait_until(lambda: stored_for(server, image_id) == [], "partial data removed")
