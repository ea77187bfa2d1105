"""The SDK against a foreign server that breaks the protocol in ways ours never would.

A tiny loopback HTTP server answers each request from a table of canned responses;
the SDK must raise `InvalidResponse` (or `ChecksumMismatch`) instead of trusting it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from keystoneauth1 import adapter, session

from osimage import exceptions, wire
from osimage.image.v1.image import Image

pytestmark = pytest.mark.e2e

IMAGE_ID = "0f6b1c9e-3d1a-4a8e-9a77-2b4f3c1d5e60"
Canned = tuple[int, list[tuple[str, str]], bytes]


class Foreign:
    """Canned answers by (method, path); `seen` records what was asked."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Canned] = {}
        self.seen: list[tuple[str, str]] = []


def handler_for(foreign: Foreign) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path
            foreign.seen.append((self.command, path))
            status, headers, body = foreign.routes.get(
                (self.command, path.split("?")[0]), (404, [], b"")
            )
            self.send_response(status)
            names = {k.lower() for k, _ in headers}
            for name, value in headers:
                self.send_header(name, value)
            if "content-length" not in names:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def foreign() -> Iterator[tuple[Foreign, adapter.Adapter]]:
    state = Foreign()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    ad = adapter.Adapter(session.Session(), endpoint_override=endpoint)
    yield state, ad
    ad.session.session.close()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": IMAGE_ID,
        "name": "n",
        "status": "active",
        "size": 0,
        "virtual_size": None,
        "checksum": None,
        "disk_format": None,
        "container_format": None,
        "min_disk": 0,
        "min_ram": 0,
        "owner": None,
        "is_public": True,
        "protected": False,
        "deleted": False,
        "deleted_at": None,
        "created_at": "2018-02-01T10:00:00.000000",
        "updated_at": "2018-02-01T10:00:00.000000",
        "properties": {},
    }
    return {**base, **changes}


def json_answer(body: object, status: int = 200) -> Canned:
    return status, [("Content-Type", "application/json")], json.dumps(body).encode()


def test_a_malformed_metadata_header_is_an_invalid_response(foreign):
    state, ad = foreign
    state.routes[("HEAD", f"/v1/images/{IMAGE_ID}")] = (
        200,
        [("x-image-meta-id", IMAGE_ID), ("x-image-meta-min_ram", "-5")],
        b"",
    )
    with pytest.raises(exceptions.InvalidResponse, match="x-image-meta-min_ram"):
        Image.existing(id=IMAGE_ID).fetch(ad)


def raw_utf8(text: str) -> str:
    """`text` as http.server sends a header value: its UTF-8 bytes, one char per byte."""
    return text.encode("utf-8").decode("latin-1")


def test_head_values_are_typed(foreign):
    state, ad = foreign
    state.routes[("HEAD", f"/v1/images/{IMAGE_ID}")] = (
        200,
        [
            ("x-image-meta-id", IMAGE_ID),
            ("x-image-meta-size", "5"),
            ("X-Image-Meta-Is_Public", "True"),
            ("x-image-meta-protected", "False"),
            ("x-image-meta-name", raw_utf8("café")),
            ("x-image-meta-property-Distro", "ubuntu"),
        ],
        b"",
    )
    image = Image.existing(id=IMAGE_ID, min_ram=3).fetch(ad)
    assert image.size == 5
    assert image.is_public is True
    assert image.is_protected is False
    assert image.name == "café"
    assert image.properties == {"distro": "ubuntu"}
    assert image.min_ram is None  # absent from the answer means null, not "keep mine"


def test_head_values_are_raw_utf8_and_names_are_percent_decoded(foreign):
    # Values: raw UTF-8, as our server writes them; a literal escape is text, not an escape.
    # Names: always percent-decoded, since the server escapes keys that are not token text.
    state, ad = foreign
    state.routes[("HEAD", f"/v1/images/{IMAGE_ID}")] = (
        200,
        [
            ("x-image-meta-id", IMAGE_ID),
            ("x-image-meta-name", "caf%C3%A9"),
            ("x-image-meta-property-note", "a%20b"),
            ("x-image-meta-property-city", raw_utf8("Zürich")),
            ("x-image-meta-property-os%20type", "linux"),
            ("x-image-meta-property-caf%C3%A9", "open"),
        ],
        b"",
    )
    image = Image.existing(id=IMAGE_ID).fetch(ad)
    assert image.name == "caf%C3%A9"
    assert image.properties == {
        "note": "a%20b",
        "city": "Zürich",
        "os type": "linux",
        "café": "open",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"image": record(size="5")},
        {"image": record(is_public="yes")},
        {"image": record(properties={"a": 1})},
        {"image": [1]},
        {"images": []},
        ["not", "an", "object"],
    ],
)
def test_a_bad_json_record_is_an_invalid_response(foreign, body):
    state, ad = foreign
    state.routes[("POST", "/v1/images")] = json_answer(body, 201)
    with pytest.raises(exceptions.InvalidResponse):
        Image.new(name="n").create(ad)


def test_a_body_that_is_not_json_is_an_invalid_response(foreign):
    state, ad = foreign
    state.routes[("POST", "/v1/images")] = (201, [], b"<html>created</html>")
    with pytest.raises(exceptions.InvalidResponse, match="not JSON"):
        Image.new(name="n").create(ad)


def test_a_bad_list_record_is_an_invalid_response(foreign):
    state, ad = foreign
    state.routes[("GET", "/v1/images/detail")] = json_answer(
        {"images": [record(), record(min_disk=-1.5)]}
    )
    with pytest.raises(exceptions.InvalidResponse, match="min_disk"):
        list(Image.list(ad))


def test_a_server_repeating_its_page_cannot_loop_the_client(foreign):
    state, ad = foreign
    state.routes[("GET", "/v1/images/detail")] = json_answer({"images": [record(), record()]})
    with pytest.raises(exceptions.InvalidResponse, match="cannot page"):
        list(Image.list(ad, limit=2))
    assert len(state.seen) == 2


def test_a_download_that_breaks_off_is_an_invalid_response(foreign):
    state, ad = foreign
    data = b"x" * 1000
    state.routes[("GET", f"/v1/images/{IMAGE_ID}")] = (
        200,
        [
            ("Content-Length", "5000"),  # promises more than it sends, then closes
            ("Connection", "close"),
            ("x-image-meta-size", "5000"),
        ],
        data,
    )
    with pytest.raises(exceptions.InvalidResponse):
        Image.existing(id=IMAGE_ID).download(ad)


def test_sha256_alone_can_reject_data(foreign):
    state, ad = foreign
    data = b"payload" * 100
    state.routes[("GET", f"/v1/images/{IMAGE_ID}")] = (
        200,
        [
            ("x-image-meta-size", str(len(data))),
            ("x-image-meta-checksum", hashlib.md5(data).hexdigest()),
            (wire.SHA256_HEADER, hashlib.sha256(b"other").hexdigest()),
        ],
        data,
    )
    with pytest.raises(exceptions.ChecksumMismatch, match="sha256") as caught:
        Image.existing(id=IMAGE_ID).download(ad)
    assert "md5" not in str(caught.value)


def test_a_size_mismatch_is_caught_without_checksums(foreign):
    state, ad = foreign
    state.routes[("GET", f"/v1/images/{IMAGE_ID}")] = (
        200,
        [("x-image-meta-size", "10")],
        b"12345",
    )
    with pytest.raises(exceptions.ChecksumMismatch, match="size 5 != declared 10"):
        Image.existing(id=IMAGE_ID).download(ad)


def test_error_statuses_map_with_details(foreign):
    state, ad = foreign
    state.routes[("PUT", f"/v1/images/{IMAGE_ID}")] = (
        409,
        [("Content-Type", "text/plain"), ("x-openstack-request-id", "req-abc")],
        b"409 Conflict\n\nImage operation conflicts",
    )
    image = Image.existing(id=IMAGE_ID, name="a")
    image.name = "b"
    with pytest.raises(exceptions.ConflictException) as caught:
        image.commit(ad)
    assert caught.value.status_code == 409
    assert caught.value.request_id == "req-abc"
    assert "conflicts" in str(caught.value)
    assert image.dirty() == {"name"}  # a failed commit keeps the change to retry
