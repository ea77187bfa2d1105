"""Downloads never lie about their length: a size mismatch is refused before the headers
(503), or the connection is aborted mid-body; either is logged once, without a traceback."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.test_crash import upload
from tests.support.http import request
from tests.support.server import Server, start_server
from tests.support.source import Script, Source, serve_source

pytestmark = pytest.mark.e2e


@pytest.fixture
def source() -> Iterator[Source]:
    with serve_source() as src:
        yield src


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32")
    yield srv
    srv.close()


def located(server: Server, url: str) -> str:
    status, _, body = request(
        server,
        "POST",
        "/v1/images",
        {
            "x-image-meta-name": "located",
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare",
            "x-image-meta-location": url,
        },
    )
    assert status == 201, body
    return str(json.loads(body)["image"]["id"])


def download(server: Server, image_id: str) -> tuple[int, int, bytes]:
    """(status, declared length, body); raises IncompleteRead if the body is cut short."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", f"/v1/images/{image_id}")
        response = conn.getresponse()
        return response.status, int(response.getheader("content-length") or 0), response.read()
    finally:
        conn.close()


def assert_logged_once(server: Server, text: str) -> None:
    log = server.log()
    assert log.count(text) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_a_location_that_sends_less_than_it_declares_aborts_the_download(
    server: Server, source: Source
) -> None:
    source.scripts["/short"] = Script("1000", "1000", b"s" * 500)
    image_id = located(server, source.url("/short"))
    with pytest.raises(http.client.IncompleteRead) as cut:
        download(server, image_id)
    assert len(cut.value.partial) == 500  # the data existed; the client sees the break
    assert_logged_once(server, f"download of image {image_id} aborted")


def test_a_location_whose_size_changed_is_refused_before_the_headers(
    server: Server, source: Source
) -> None:
    source.scripts["/liar"] = Script("1000", "500", b"l" * 500)
    image_id = located(server, source.url("/liar"))
    status, _, body = download(server, image_id)
    assert status == 503
    assert b"500 bytes held, 1000 recorded" in body
    assert_logged_once(server, f"download of image {image_id} refused")


@pytest.mark.parametrize("recorded", [4000, 1000])
def test_an_admin_edited_size_is_refused_before_the_headers(server: Server, recorded: int) -> None:
    image_id = upload(server, b"a" * 2000)
    status, _, _ = request(
        server, "PUT", f"/v1/images/{image_id}", {"x-image-meta-size": str(recorded)}
    )
    assert status == 200
    status, _, body = download(server, image_id)
    assert status == 503
    assert f"2000 bytes held, {recorded} recorded".encode() in body
    assert_logged_once(server, f"download of image {image_id} refused")


@pytest.mark.file_store
def test_a_blob_cut_short_mid_download_aborts_the_connection(server: Server) -> None:
    size = 8 * 1024 * 1024
    image_id = upload(server, b"m" * size)
    blob = server.data_dir / "images" / image_id
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", f"/v1/images/{image_id}")
        response = conn.getresponse()
        assert response.status == 200
        first = response.read(65536)
        assert first == b"m" * 65536  # the data existed and was being sent
        with blob.open("r+b") as handle:
            handle.truncate(2 * 1024 * 1024)  # the blob goes (partly) missing
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert_logged_once(server, f"download of image {image_id} aborted")


def test_a_missing_blob_is_404_before_the_headers(server: Server) -> None:
    image_id = upload(server, b"g" * 1000)
    blob = server.data_dir / "images" / image_id
    if not blob.exists():
        pytest.skip("removes a file of the file store")
    blob.unlink()
    status, _, body = download(server, image_id)
    assert status == 404
    assert b"missing from the store" in body


@pytest.mark.parametrize("digits", [20, 40])  # beyond 64 bits; 40 is past what h11 reads
def test_a_source_size_beyond_64_bits_is_400(server: Server, source: Source, digits: int) -> None:
    huge = "9" * digits
    source.scripts["/huge"] = Script(huge, huge)
    status, _, body = request(
        server,
        "POST",
        "/v1/images",
        {
            "x-image-meta-name": "huge",
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare",
            "x-image-meta-location": source.url("/huge"),
        },
    )
    assert status == 400, body
    assert b"Content-Length" in body
    assert "Traceback" not in server.log()
