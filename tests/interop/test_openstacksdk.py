"""openstacksdk's image v1 proxy, unmodified, against `osimage serve` in both auth modes.

What works: listing (with its query filters and marker paging), find by name, delete,
download.
What does not, and why, is pinned here so docs/compat.md stays true: openstacksdk
fetches one image with ``GET /v1/images/{id}`` (in v1 that is the data download, so it
gets bytes, not JSON), and creates and updates with JSON bodies that v1 does not define.
It downloads from the v2 URL ``/v1/images/{id}/file``, which osimage answers as an alias
of the v1 download.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from glanceclient import exc as gexc
from openstack import connection
from openstack import exceptions as sdk_exc

from tests.interop.helpers import Target, md5, payload, unique

pytestmark = [
    pytest.mark.e2e,
    # openstacksdk 4.x warns about its own internals, not about how it is called: on
    # every Connection (an influxdb section it fills with None), every fetch
    # (`_compute_attributes`), every request (`service_type`).
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning"),
]

FORMATS = {"disk_format": "raw", "container_format": "bare"}


@pytest.fixture
def conn(target: Target) -> Iterator[Any]:
    """A Connection that talks straight to the server (no cloud named: no clouds.yaml, no OS_*)."""
    if target.admin:
        auth: dict[str, Any] = {"auth_type": "none", "auth": {"endpoint": target.server.url}}
    else:
        auth = {
            "auth_type": "admin_token",
            "auth": {"token": target.token, "endpoint": target.server.url},
        }
    made = connection.Connection(
        image_endpoint_override=f"{target.server.url}/v1",
        image_api_version="1",
        **auth,
    )
    yield made
    made.close()


def test_proxy_is_v1(conn: Any) -> None:
    assert conn.image.api_version == "1"


def test_images_lists_details(conn: Any, gc: Any, target: Target) -> None:
    data = payload(4_000, "sdk-list")
    name = unique("sdk-list")
    made = gc.images.create(
        name=name, data=io.BytesIO(data), properties={"distro": "debian"},
        is_public=target.admin, min_ram=64, **FORMATS,
    )  # fmt: skip
    [image] = [i for i in conn.image.images() if i.id == made.id]
    assert (image.name, image.status, image.size, image.checksum) == (
        name, "active", len(data), md5(data),
    )  # fmt: skip
    assert (image.disk_format, image.container_format, image.min_ram) == ("raw", "bare", 64)
    assert (image.is_public, image.is_protected, image.owner) == (
        target.admin, False, target.project,
    )  # fmt: skip
    # openstacksdk files the record keys its v1 Image does not declare under properties
    assert image.properties == {
        "distro": "debian", "virtual_size": None, "deleted": False, "deleted_at": None,
    }  # fmt: skip


def test_images_query_and_marker_paging(conn: Any, gc: Any, target: Target) -> None:
    name = unique("sdk-page")
    ids = {
        gc.images.create(name=name, is_public=target.admin, size=n + 1, **FORMATS).id
        for n in range(3)
    }
    assert {i.id for i in conn.image.images(name=name)} == ids
    paged = list(conn.image.images(name=name, limit=1))  # one image per request, by marker
    assert [i.id for i in paged] == [i.id for i in conn.image.images(name=name)]
    assert {i.id for i in paged} == ids
    assert [i.size for i in conn.image.images(name=name, size_min=2)] == [3, 2]
    assert {i.id for i in conn.image.images(name=name, status="active")} == set()


def test_find_image_by_name(conn: Any, gc: Any, target: Target) -> None:
    name = unique("sdk-find")
    made = gc.images.create(name=name, is_public=target.admin, **FORMATS)
    found = conn.image.find_image(name)
    assert (found.id, found.name, found.status) == (made.id, name, "queued")
    assert conn.image.find_image(unique("absent")) is None
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.find_image(unique("absent"), ignore_missing=False)
    gc.images.create(name=name, is_public=target.admin, **FORMATS)
    with pytest.raises(sdk_exc.DuplicateResource):
        conn.image.find_image(name)


def test_find_or_get_by_id_gets_only_the_id(conn: Any, gc: Any, target: Target) -> None:
    """openstacksdk fetches `GET /v1/images/{id}`: v1 answers with the image data, which
    openstacksdk reads whole and cannot parse, so the Image it returns knows only its id."""
    made = gc.images.create(name=unique("sdk-id"), data=io.BytesIO(b"bytes"), **FORMATS)
    for image in (conn.image.find_image(made.id), conn.image.get_image(made.id)):
        assert image.id == made.id
        assert (image.name, image.status, image.checksum) == (None, None, None)


def test_delete_image(conn: Any, gc: Any, target: Target) -> None:
    name = unique("sdk-del")
    made = gc.images.create(name=name, data=io.BytesIO(b"gone soon"), **FORMATS)
    conn.image.delete_image(made.id)
    with pytest.raises(gexc.HTTPNotFound):
        gc.images.data(made.id)
    found = conn.image.find_image(name)
    assert found is None
    conn.image.delete_image(made.id)  # ignore_missing=True by default
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.delete_image(made.id, ignore_missing=False)
    found_by_name = gc.images.create(name=name, is_public=target.admin, **FORMATS)
    conn.image.delete_image(conn.image.find_image(name))
    with pytest.raises(gexc.HTTPNotFound):
        gc.images.data(found_by_name.id)


def test_create_image_is_refused_cleanly(conn: Any, gc: Any, target: Target) -> None:
    """create_image POSTs a JSON body; v1 takes a body as image data, and refuses it
    without Content-Type application/octet-stream. Nothing is left behind."""
    name = unique("sdk-create")
    with pytest.raises(sdk_exc.BadRequestException) as refused:
        # this v1 proxy pops `wait` and `timeout` unconditionally: both must be given
        conn.image.create_image(name, data=b"abc", wait=False, timeout=1, **FORMATS)
    assert refused.value.response.request.headers["Content-Type"] == "application/json"
    assert "Content-Type must be application/octet-stream" in refused.value.response.text
    assert list(gc.images.list(filters={"name": name}, **target.list_kwargs)) == []


def test_update_image_is_refused_cleanly(conn: Any, gc: Any, target: Target) -> None:
    """update_image PUTs a JSON body (``{"image": {...}}``), refused like create's; the
    image is unchanged and still takes data."""
    made = gc.images.create(name=unique("sdk-update"), properties={"a": "1"}, **FORMATS)
    with pytest.raises(sdk_exc.BadRequestException) as refused:
        conn.image.update_image(made.id, name="renamed")
    sent = refused.value.response.request
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body or "") == {"image": {"name": "renamed"}}
    assert "Content-Type must be application/octet-stream" in refused.value.response.text
    got = gc.images.get(made.id)
    assert (got.name, got.status, got.properties) == (made.name, "queued", {"a": "1"})
    assert gc.images.update(made.id, data=io.BytesIO(b"data")).status == "active"


def test_download_image(conn: Any, gc: Any, tmp_path: Any) -> None:
    """openstacksdk downloads from ``/v1/images/{id}/file``, osimage's alias of the v1
    download: the bytes arrive whole, in memory, streamed and into a file."""
    data = payload(300_000, "sdk-download")
    made = gc.images.create(name=unique("sdk-dl"), data=io.BytesIO(data), **FORMATS)
    assert made.checksum == md5(data)
    response = conn.image.download_image(made.id)
    assert response.status_code == 200
    assert md5(response.content) == made.checksum
    assert response.content == data
    with conn.image.download_image(made.id, stream=True) as streamed:
        assert b"".join(streamed.iter_content(65536)) == data
    target_file = tmp_path / "out.raw"
    conn.image.download_image(made.id, output=str(target_file))
    assert md5(target_file.read_bytes()) == made.checksum


def test_download_image_uses_the_file_alias(conn: Any, gc: Any, target: Target) -> None:
    """Pins how openstacksdk downloads, so docs/compat.md stays true: the v2-shaped URL,
    answered with v1's download headers (no Content-MD5 there, so openstacksdk cannot
    verify what it got: the tests above compare md5 themselves)."""
    data = b"data for the alias"
    made = gc.images.create(name=unique("sdk-dlfile"), data=io.BytesIO(data), **FORMATS)
    response = conn.image.download_image(made.id)
    assert response.request.path_url == f"/v1/images/{made.id}/file"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["x-image-meta-checksum"] == md5(data)
    assert "Content-MD5" not in response.headers
