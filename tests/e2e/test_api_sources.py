"""Spec §9.1 steps 4-8, §9.5 step 8 and §12: external locations and copy-from.

The only source a test may reach is loopback, so the server under test is told to allow
127.0.0.1 (`--allow-source-network`) and serves as its own source.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.api_client import Api, md5, meta
from tests.e2e.conftest import assert_no_tracebacks
from tests.support.server import start_server

pytestmark = pytest.mark.e2e

COPY_FROM = "x-glance-api-copy-from"
DATA = b"*" * 5120


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    srv = start_server(tmp_path_factory.mktemp("sources"), "--allow-source-network", "127.0.0.1/32")
    yield Api(srv.url)
    assert_no_tracebacks(srv)
    srv.stop()


def url_of(api: Api, image_id: str) -> str:
    return f"http://{api.host}:{api.port}/v1/images/{image_id}"


def wait_status(api: Api, image_id: str, wanted: set[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = api.head(image_id).meta.get("status", "")
        if status in wanted:
            return status
        time.sleep(0.05)
    raise AssertionError(f"image {image_id} never reached {wanted}")


FORMATS = {"disk_format": "raw", "container_format": "ovf"}


def test_copy_from_copies_the_data(src: Api) -> None:
    source = src.upload(DATA, is_public=True)
    resp = src.create(
        {**meta(name="copy", is_public=True, **FORMATS), COPY_FROM: url_of(src, source["id"])}
    )
    assert resp.status == 201, resp
    copy = resp.image
    assert copy["status"] == "queued"
    assert wait_status(src, copy["id"], {"active", "killed"}) == "active"
    got = src.get(copy["id"])
    assert got.status == 200
    assert got.header("content-length") == "5120"
    assert got.body == DATA
    assert src.delete(source["id"]).status == 200
    assert src.get(copy["id"]).body == DATA
    assert not {"location", "copy_from"} & set(resp.image)


def test_copy_from_a_missing_source_is_404(src: Api) -> None:
    resp = src.create({**meta(**FORMATS), COPY_FROM: url_of(src, str(uuid.uuid4()))})
    assert resp.status == 404, resp


def test_location_registers_external_data(src: Api) -> None:
    source = src.upload(DATA, is_public=True)
    resp = src.create(meta(location=url_of(src, source["id"]), **FORMATS))
    assert resp.status == 201, resp
    image = resp.image
    assert image["status"] == "active"
    assert image["size"] == 5120
    assert "location" not in image
    head = src.head(image["id"])
    assert "location" not in head.meta
    got = src.get(image["id"])
    assert got.status == 200
    assert got.body == DATA
    assert md5(got.body) == md5(DATA)


def test_location_with_a_conflicting_size_is_409(src: Api) -> None:
    source = src.upload(DATA, is_public=True)
    resp = src.create(meta(location=url_of(src, source["id"]), size=1, **FORMATS))
    assert resp.status == 409, resp


def test_location_needs_formats(src: Api) -> None:
    source = src.upload(DATA, is_public=True)
    resp = src.create(meta(location=url_of(src, source["id"]), disk_format="raw"))
    assert resp.status == 400, resp
    assert "container format is not specified" in resp.text.lower()


def test_location_on_a_queued_image_activates_it(src: Api) -> None:
    source = src.upload(DATA, is_public=True)
    image = src.reserve(**FORMATS)
    resp = src.update(image["id"], meta(location=url_of(src, source["id"])))
    assert resp.status == 200, resp
    assert resp.image["status"] == "active"
    assert "location" not in resp.image


def test_location_on_an_active_image_is_400(src: Api) -> None:
    source = src.upload(DATA, is_public=True)
    image = src.upload(b"mine")
    resp = src.update(image["id"], meta(location=url_of(src, source["id"])))
    assert resp.status == 400, resp
    assert src.get(image["id"]).body == b"mine"
    resp = src.update(image["id"], {COPY_FROM: url_of(src, source["id"])})
    assert resp.status == 400, resp


@pytest.mark.parametrize("combo", ["copy+body", "location+body", "copy+location"])
def test_multiple_sources_are_400(src: Api, combo: str) -> None:
    source = src.upload(DATA, is_public=True)
    url = url_of(src, source["id"])
    headers: dict[str, str] = dict(meta(**FORMATS))
    if "copy" in combo:
        headers[COPY_FROM] = url
    if "location" in combo:
        headers.update(meta(location=url))
    resp = src.create(headers, b"body" if "body" in combo else None)
    assert resp.status == 400, resp


@pytest.mark.parametrize("field", ["location", "copy"])
@pytest.mark.parametrize(
    "url",
    [
        "",
        "file:///etc/passwd",
        "filesystem:///etc/passwd",
        "swift+config://xxx",
        "bad+scheme://host/x",
        "http://",
    ],
)
def test_unusable_sources_are_400(src: Api, field: str, url: str) -> None:
    headers = meta(**FORMATS)
    headers.update(meta(location=url) if field == "location" else {COPY_FROM: url})
    resp = src.create(headers)
    assert resp.status == 400, resp


def test_loopback_sources_are_refused_by_default(api: Api, server_url_image: str) -> None:
    for headers in (
        meta(location=server_url_image, **FORMATS),
        {**meta(**FORMATS), COPY_FROM: server_url_image},
    ):
        resp = api.create(headers)
        assert 400 <= resp.status < 500, resp


@pytest.fixture
def server_url_image(api: Api) -> str:
    image = api.upload(DATA, is_public=True)
    return url_of(api, image["id"])


def test_bad_store_is_400(src: Api) -> None:
    assert src.create(meta(store="bad")).status == 400
    assert src.create(meta(store="bad", **FORMATS), DATA).status == 400
