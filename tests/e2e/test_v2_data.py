"""Image API v2 data (spec v2 §9): upload, download with ranges, stage + import
(glance-direct, web-download behind the copy_from guard), info routes; with v1 beside."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.api_client import Api, md5
from tests.e2e.conftest import assert_no_tracebacks
from tests.e2e.v2_client import OCTETS, V2
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.fixture(autouse=True)
def _no_tracebacks(tokens_server: Server) -> Iterator[None]:
    offset = len(tokens_server.log())
    yield
    new = tokens_server.log()[offset:]
    assert "Traceback" not in new, new[-3000:]


@pytest.fixture(scope="module")
def v2(users: dict[str, Api]) -> dict[str, V2]:
    return {name: V2(api) for name, api in users.items()}


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


# -- upload -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False])
def test_upload_then_download(v2: dict[str, V2], chunked: bool) -> None:
    alice = v2["alice"]
    data = bytes(range(256)) * 300
    image = alice.create()
    body = iter([data[:1000], data[1000:]]) if chunked else data
    assert (
        alice.upload(image["id"], body, **{"X-OpenStack-Image-Size": str(len(data))}).status == 204
    )
    got = alice.show(image["id"]).json()
    assert (got["status"], got["size"], got["checksum"]) == ("active", len(data), md5(data))
    assert (got["os_hash_algo"], got["os_hash_value"]) == ("sha512", sha512(data))
    resp = alice.download(image["id"])
    assert resp.status == 200
    assert resp.body == data
    assert resp.header("content-type") == "application/octet-stream"
    assert resp.header("content-md5") == md5(data)  # hex, as Glance sends it
    assert resp.header("content-length") == str(len(data))


def test_download_without_data_is_204(v2: dict[str, V2]) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].download(image["id"])
    assert resp.status == 204
    assert resp.body == b""
    assert resp.header("content-type") is None


def test_zero_byte_upload_activates(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.create()
    assert alice.upload(image["id"], b"").status == 204
    got = alice.show(image["id"]).json()
    assert (got["status"], got["size"], got["checksum"]) == ("active", 0, md5(b""))
    assert got["os_hash_value"] == sha512(b"")


@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=3-10", 206, b"DEFGHIJK", "bytes 3-10/26"),
        ("bytes=20-", 206, b"UVWXYZ", "bytes 20-25/26"),
        ("bytes=-4", 206, b"WXYZ", "bytes 22-25/26"),
        ("bytes=-100", 206, ALPHABET, "bytes 0-25/26"),
        ("bytes=24-100", 206, b"YZ", "bytes 24-25/26"),
        ("bytes=10-5", 416, None, None),
        ("bytes=26-", 416, None, None),
        ("pages=1-2", 416, None, None),
        ("bytes=1-2,4-5", 400, None, None),
    ],
)
def test_ranges(
    v2: dict[str, V2],
    alphabet: str,
    header: str,
    status: int,
    body: bytes | None,
    content_range: str | None,
) -> None:
    resp = v2["alice"].download(alphabet, Range=header)
    assert resp.status == status, resp
    if body is not None:
        assert resp.body == body
        assert resp.header("content-range") == content_range
        assert resp.header("content-length") == str(len(body))


def test_request_content_range_is_honoured(v2: dict[str, V2], alphabet: str) -> None:
    resp = v2["alice"].download(alphabet, **{"Content-Range": "bytes 3-10/26"})
    assert resp.status == 206
    assert resp.body == b"DEFGHIJK"


@pytest.fixture(scope="module")
def alphabet(v2: dict[str, V2]) -> str:
    return str(v2["alice"].active(ALPHABET)["id"])


def test_upload_refusals(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.create()
    resp = alice.call(
        "PUT", f"images/{image['id']}/file", headers={"Content-Type": "text/plain"}, data=b"x"
    )
    assert resp.status == 415
    no_formats = alice.call("POST", "images", {"name": "noformats"}).json()
    resp = alice.upload(no_formats["id"], b"x")
    assert resp.status == 400
    assert "disk_format, container_format must be set" in resp.text
    assert alice.show(no_formats["id"]).json()["status"] == "queued"
    resp = alice.upload(image["id"], b"x", **{"X-OpenStack-Image-Size": "lots"})
    assert resp.status == 400
    assert alice.upload(image["id"], b"first").status == 204
    second = alice.upload(image["id"], b"second")
    assert second.status == 409
    assert alice.download(image["id"]).body == b"first"  # data unchanged
    public = v2["admin"].create(visibility="public")
    assert v2["bob"].upload(public["id"], b"x").status == 403
    private = alice.create(visibility="private")
    assert v2["bob"].upload(private["id"], b"x").status == 404


def test_declared_size_must_match_the_data(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.create()
    resp = alice.upload(image["id"], iter([b"12345"]), **{"X-OpenStack-Image-Size": "10"})
    assert resp.status == 400, resp
    got = alice.show(image["id"]).json()
    assert (got["status"], got["size"]) == ("queued", None)
    assert alice.download(image["id"]).status == 204


def test_upload_over_the_cap_goes_back_to_queued(limited: Api) -> None:
    v2 = V2(limited)
    image = v2.create()
    resp = v2.upload(image["id"], iter([b"x" * 6000, b"x" * 6000]))  # chunked: no size given
    assert resp.status == 413, resp
    got = v2.show(image["id"]).json()
    assert (got["status"], got["size"]) == ("queued", None)
    assert v2.upload(image["id"], b"fits").status == 204  # queued again: a retry works


def test_v1_upload_has_the_multihash_and_v2_data_reads_through_v1(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    made = alice.api.upload(b"through v1", name="v1-up", disk_format="raw", container_format="bare")
    got = alice.show(made["id"]).json()
    assert (got["os_hash_algo"], got["os_hash_value"]) == ("sha512", sha512(b"through v1"))
    assert alice.download(made["id"]).body == b"through v1"
    image = alice.active(b"through v2")
    v1 = alice.api.get(image["id"])
    assert v1.status == 200
    assert v1.body == b"through v2"
    assert v1.meta["checksum"] == md5(b"through v2")


def test_v1_reservation_without_data_is_204_in_v2(v2: dict[str, V2]) -> None:
    made = v2["alice"].api.reserve(
        name="v1-empty", size=0, disk_format="raw", container_format="bare"
    )
    got = v2["alice"].show(made["id"]).json()
    assert (got["status"], got["size"]) == ("active", 0)
    assert v2["alice"].download(made["id"]).status == 204


# -- stage and import -------------------------------------------------------------------------


def test_info_routes(v2: dict[str, V2]) -> None:
    resp = v2["alice"].call("GET", "info/import")
    assert resp.status == 200
    assert resp.json()["import-methods"]["value"] == ["glance-direct", "web-download"]
    assert v2["alice"].call("GET", "info/stores").status == 404  # one store, as Glance says


def wait_status(v2: V2, image_id: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got: dict[str, Any] = v2.show(image_id).json()
        if got["status"] == wanted:
            return got
        time.sleep(0.05)
    raise AssertionError(f"image {image_id} never reached {wanted}")


def test_stage_and_glance_direct_import(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.create()
    stage = f"images/{image['id']}/stage"
    assert alice.call("PUT", stage, headers=OCTETS, data=iter([b"staged ", b"bytes"])).status == 204
    assert alice.show(image["id"]).json()["status"] == "uploading"
    assert alice.download(image["id"]).status == 204  # staged data is not served
    assert alice.call("PUT", stage, headers=OCTETS, data=b"again").status == 409
    resp = alice.call(
        "POST",
        f"images/{image['id']}/import",
        {"method": {"name": "glance-direct"}, "all_stores": True},
    )
    assert resp.status == 202, resp
    got = wait_status(alice, image["id"], "active")
    assert (got["size"], got["os_hash_value"]) == (12, sha512(b"staged bytes"))
    assert alice.download(image["id"]).body == b"staged bytes"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"method": {}}, 400),
        ({"method": {"name": "copy-image"}}, 400),
        ({"method": {"name": "glance-direct"}}, 409),  # not staged
        ({"method": {"name": "web-download"}}, 400),  # no uri
        ({"method": {"name": "web-download", "uri": "ftp://example.com/x"}}, 400),
        ({"method": {"name": "web-download", "uri": "http://127.0.0.1:1/x"}}, 400),  # SSRF guard
    ],
)
def test_import_refusals(v2: dict[str, V2], body: Any, status: int) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].call("POST", f"images/{image['id']}/import", body)
    assert resp.status == status, resp
    assert v2["alice"].show(image["id"]).json()["status"] == "queued"


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2]:
    """A noauth server that may fetch from 127.0.0.1 (`--allow-source-network`): it is its
    own web-download source."""
    srv = start_server(tmp_path_factory.mktemp("v2src"), "--allow-source-network", "127.0.0.1/32")
    yield V2(Api(srv.url))
    assert_no_tracebacks(srv)
    srv.stop()


def test_web_download_import(src: V2) -> None:
    source = src.active(b"fetched over http", visibility="public")
    url = f"http://{src.api.host}:{src.api.port}/v2/images/{source['id']}/file"
    image = src.create()
    resp = src.call(
        "POST", f"images/{image['id']}/import", {"method": {"name": "web-download", "uri": url}}
    )
    assert resp.status == 202, resp
    got = wait_status(src, image["id"], "active")
    assert got["checksum"] == md5(b"fetched over http")
    assert src.download(image["id"]).body == b"fetched over http"


def test_failed_web_download_goes_back_to_queued(src: V2) -> None:
    image = src.create()
    url = (
        f"http://{src.api.host}:{src.api.port}/v2/images/00000000-0000-0000-0000-000000000000/file"
    )
    body = {"method": {"name": "web-download", "uri": url}}
    resp = src.call("POST", f"images/{image['id']}/import", body)
    assert resp.status == 202
    # the import left `queued` before the 202; seeing `queued` again means it failed back
    got = wait_status(src, image["id"], "queued")
    assert (got["size"], got["checksum"]) == (None, None)
    assert src.download(image["id"]).status == 204
