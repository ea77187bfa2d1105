"""Spec §5: the image record as JSON (detail and summary) and as headers (HEAD/GET)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.api_client import Api, md5, meta, props, unique

pytestmark = pytest.mark.e2e

DETAIL = {
    "id",
    "name",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "owner",
    "is_public",
    "protected",
    "deleted",
    "created_at",
    "updated_at",
    "deleted_at",
    "properties",
}
SUMMARY = {"id", "name", "size", "disk_format", "container_format", "checksum"}
NEVER = {"location", "store", "uri", "copy_from", "tags", "visibility", "locations", "direct_url"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
DATA = b"*" * 5120
DATA_MD5 = "c2e5db72bd7fd153f53ede5da5a06de3"


def test_reserve_with_nothing_returns_the_full_default_record(api: Api) -> None:
    resp = api.create()
    assert resp.status == 201, resp
    assert resp.content_type.startswith("application/json")
    assert set(resp.json()) == {"image"}
    image = resp.image
    assert set(image) == DETAIL
    assert UUID.match(image["id"])
    expected: dict[str, Any] = {
        "name": None,
        "status": "queued",
        "size": 0,
        "virtual_size": None,
        "checksum": None,
        "disk_format": None,
        "container_format": None,
        "min_disk": 0,
        "min_ram": 0,
        "owner": None,
        "is_public": False,
        "protected": False,
        "deleted": False,
        "deleted_at": None,
        "properties": {},
    }
    assert {k: image[k] for k in expected} == expected
    assert TIMESTAMP.match(image["created_at"])
    assert TIMESTAMP.match(image["updated_at"])
    assert resp.header("etag") is None


def test_create_answers_an_absolute_location(api: Api) -> None:
    resp = api.create(meta(name="located"))
    assert resp.status == 201
    assert resp.header("location") == f"http://{api.host}:{api.port}/v1/images/{resp.image['id']}"


def test_upload_record_has_checksum_size_and_etag(api: Api) -> None:
    resp = api.create(
        {
            **meta(name="Image1", disk_format="raw", container_format="ovf"),
            **props(distro="ubuntu"),
        },
        DATA,
    )
    assert resp.status == 201, resp
    image = resp.image
    assert set(image) == DETAIL
    assert image["checksum"] == DATA_MD5 == md5(DATA)
    assert image["size"] == 5120
    assert image["status"] == "active"
    assert image["is_public"] is False
    assert image["properties"] == {"distro": "ubuntu"}
    assert resp.header("etag") == DATA_MD5
    assert isinstance(image["size"], int)
    assert not isinstance(image["size"], bool)
    assert isinstance(image["min_ram"], int)
    assert isinstance(image["min_disk"], int)
    assert isinstance(image["is_public"], bool)
    assert isinstance(image["deleted"], bool)


def test_detail_and_summary_lists_have_exact_key_sets(api: Api) -> None:
    tag = unique("shape")
    api.upload(DATA, name=tag, is_public=True)
    detail = api.detail(name=tag)
    summary = api.list(name=tag)
    assert detail.status == summary.status == 200
    assert set(detail.json()) == {"images"} == set(summary.json())
    [d] = detail.images
    [s] = summary.images
    assert set(d) == DETAIL
    assert set(s) == SUMMARY
    assert s == {
        "id": d["id"],
        "name": tag,
        "size": 5120,
        "disk_format": "raw",
        "container_format": "bare",
        "checksum": DATA_MD5,
    }
    assert d["status"] == "active"
    assert d["deleted"] is False
    assert d["deleted_at"] is None
    assert d["properties"] == {}
    assert d["is_public"] is True


def test_empty_lists_are_the_exact_literal(fresh: Api) -> None:
    for path in ("/v1/images", "/v1/images/detail"):
        resp = fresh.request("GET", path)
        assert resp.status == 200
        assert resp.body == b'{"images": []}'
        assert resp.content_type.startswith("application/json")


def test_filtered_empty_list_is_the_exact_literal(api: Api) -> None:
    resp = api.list(name=unique("absent"))
    assert resp.body == b'{"images": []}'


def test_head_emits_every_non_null_field_and_nothing_else(api: Api) -> None:
    image = api.reserve()
    resp = api.head(image["id"])
    assert resp.status == 200, resp
    assert resp.body == b""
    assert set(resp.meta) == {
        "id",
        "status",
        "size",
        "min_disk",
        "min_ram",
        "is_public",
        "protected",
        "deleted",
        "created_at",
        "updated_at",
    }
    assert resp.meta["id"] == image["id"]
    assert resp.meta["status"] == "queued"
    assert resp.meta["size"] == "0"
    assert resp.meta["is_public"] == "False"
    assert resp.meta["deleted"] == "False"
    assert resp.meta["created_at"] == image["created_at"]
    assert resp.header("etag") is None


def test_head_of_an_active_image(api: Api) -> None:
    image = api.upload(
        DATA,
        name="Image1",
        is_public=True,
        min_disk=1,
        min_ram=256,
        protected=True,
        virtual_size=9000,
    )
    resp = api.head(image["id"])
    assert resp.status == 200
    assert resp.meta == {
        "id": image["id"],
        "name": "Image1",
        "status": "active",
        "size": "5120",
        "virtual_size": "9000",
        "checksum": DATA_MD5,
        "disk_format": "raw",
        "container_format": "bare",
        "min_disk": "1",
        "min_ram": "256",
        "is_public": "True",
        "protected": "True",
        "deleted": "False",
        "created_at": image["created_at"],
        "updated_at": image["updated_at"],
    }
    assert resp.header("etag") == DATA_MD5
    assert "x-image-meta-location" not in resp.header_names()
    api.update(image["id"], meta(protected=False))


def test_get_streams_data_with_metadata_headers(api: Api) -> None:
    image = api.upload(DATA, name="Image1", disk_format="raw", container_format="ovf")
    resp = api.get(image["id"])
    assert resp.status == 200
    assert resp.body == DATA
    assert resp.header("content-type") == "application/octet-stream"
    assert resp.header("content-length") == "5120"
    assert resp.header("etag") == DATA_MD5
    assert resp.meta["name"] == "Image1"
    assert resp.meta["is_public"] == "False"
    assert resp.meta["status"] == "active"
    assert resp.meta["disk_format"] == "raw"
    assert resp.meta["container_format"] == "ovf"
    assert resp.meta["size"] == "5120"
    assert resp.meta["id"] == image["id"]
    assert resp.header("content-md5") is None


def test_range_requests_are_ignored(api: Api) -> None:
    image = api.upload(DATA)
    resp = api.get(image["id"], {"Range": "bytes=0-9"})
    assert resp.status == 200, resp
    assert resp.body == DATA
    assert resp.header("content-length") == "5120"


def test_property_headers_are_lower_case_and_round_trip(api: Api) -> None:
    image = api.reserve()
    resp = api.update(
        image["id"],
        {"X-Image-Meta-Property-Distro": "Ubuntu", "x-image-meta-property-os-type": "linux"},
    )
    assert resp.status == 200
    assert resp.image["properties"] == {"distro": "Ubuntu", "os_type": "linux"}
    assert api.head(image["id"]).properties == {"distro": "Ubuntu", "os_type": "linux"}


def test_property_with_empty_value_is_null_and_not_emitted(api: Api) -> None:
    image = api.reserve()
    resp = api.update(image["id"], {**props(kept="v"), "x-image-meta-property-blank": ""})
    assert resp.status == 200
    assert resp.image["properties"] == {"kept": "v", "blank": None}
    assert api.head(image["id"]).properties == {"kept": "v"}


def test_no_record_ever_shows_a_location_or_store(api: Api) -> None:
    tag = unique("never")
    created = api.create(
        meta(name=tag, disk_format="raw", container_format="bare", is_public=True),
        DATA,
    )
    assert created.status == 201, created
    image_id = created.image["id"]
    updated = api.update(image_id, meta(name=tag))
    records = [
        created.image,
        updated.image,
        *api.detail(name=tag).images,
        *api.list(name=tag).images,
    ]
    for record in records:
        assert not (set(record) & NEVER), record
    for resp in (api.head(image_id), api.get(image_id)):
        assert not {"location", "store", "uri", "copy_from"} & set(resp.meta)


def test_put_refreshes_updated_at_not_created_at(api: Api) -> None:
    image = api.reserve(name="times")
    resp = api.update(image["id"], props(x="1"))
    assert resp.status == 200
    assert resp.image["created_at"] == image["created_at"]
    assert resp.image["updated_at"] > image["updated_at"]
    assert TIMESTAMP.match(resp.image["updated_at"])
