"""The image cache through Image API v2 (issues 12 and 16): v2 downloads fill and are served
from the cache, and the v2 cache API (/v2/cache, /v2/cache/{id}; v2.14 and v2.16, listed
only when a cache is configured) manages it, for admins only."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api_client import OCTETS, Api, meta
from tests.e2e.test_cache import MIB, Node, _close, start_node
from tests.support.server import start_server

pytestmark = pytest.mark.e2e
CLEAR = "X-Image-Cache-Clear-Target"


@pytest.fixture(
    params=[
        pytest.param("swift", marks=pytest.mark.swift),
        pytest.param("s3", marks=pytest.mark.s3),
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def node(tmp_path: Path, kind: str) -> Iterator[Node]:
    """A cached node in front of Swift or S3, as in test_cache.py."""
    started = start_node(tmp_path, kind)
    try:
        yield started
    finally:
        _close(started)


def _v2_download(node: Node, image_id: str) -> tuple[int, str]:
    answer = node.api.request("GET", f"/v2/images/{image_id}/file")
    return answer.status, hashlib.md5(answer.body).hexdigest()


def _v2_cached(api: Api) -> list[str]:
    answer = api.request("GET", "/v2/cache")
    assert answer.status == 200, answer
    return [entry["image_id"] for entry in answer.json()["cached_images"]]


def test_v2_downloads_fill_and_are_served_from_the_cache(node: Node) -> None:
    data = os.urandom(MIB + 3)
    image_id = node.upload(data)
    assert _v2_download(node, image_id) == (200, hashlib.md5(data).hexdigest())
    assert node.settled(1) == [image_id]
    assert node.store_reads(image_id) == 1
    assert _v2_download(node, image_id) == (200, hashlib.md5(data).hexdigest())
    assert node.store_reads(image_id) == 1  # the second one came from the cache
    ranged = node.api.request("GET", f"/v2/images/{image_id}/file", {"Range": "bytes=5-9"})
    assert (ranged.status, ranged.body) == (206, data[5:10])
    assert node.store_reads(image_id) == 1

    entries = node.api.request("GET", "/v2/cache").json()
    assert entries["queued_images"] == []
    [entry] = entries["cached_images"]
    assert (entry["image_id"], entry["size"]) == (image_id, len(data))
    assert entry["hits"] >= 1
    assert node.api.request("DELETE", f"/v2/cache/{image_id}").status == 204
    assert _v2_cached(node.api) == []
    assert node.entries() == []
    assert _v2_download(node, image_id)[0] == 200
    assert node.store_reads(image_id) == 2  # dropped from the cache: read from the store


def test_v2_cache_queues_images_for_prefetch(tmp_path: Path, kind: str) -> None:
    cached = start_node(tmp_path, kind, "--cache-prefetch-interval", "0.2")
    try:
        data = os.urandom(MIB)
        image_id = cached.upload(data)
        assert cached.api.request("PUT", f"/v2/cache/{image_id}").status == 202
        assert cached.settled(1) == [image_id]
        assert cached.store_reads(image_id) == 1
        assert _v2_download(cached, image_id) == (200, hashlib.md5(data).hexdigest())
        assert cached.store_reads(image_id) == 1
        assert cached.api.request("DELETE", "/v2/cache", {CLEAR: "cache"}).status == 204
        assert _v2_cached(cached.api) == []
    finally:
        _close(cached)


def test_v2_cache_api_is_for_admins_only_and_listed_with_a_cache(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--cache-dir", str(tmp_path / "cache"), auth="tokens")
    try:
        alice, admin = Api(server.url, "alice-token"), Api(server.url, "admin-token")
        image_id = str(uuid.uuid4())
        answer = admin.request(
            "POST",
            "/v1/images",
            {**meta(id=image_id, name="c", disk_format="raw", container_format="bare"), **OCTETS},
            b"x" * 1000,
        )
        assert answer.status == 201, answer
        for method, path in (
            ("GET", "/v2/cache"),
            ("DELETE", "/v2/cache"),
            ("PUT", f"/v2/cache/{image_id}"),
            ("DELETE", f"/v2/cache/{image_id}"),
        ):
            refused = alice.request(method, path)
            assert refused.status == 403, (method, path, refused)
        assert admin.request("PUT", f"/v2/cache/{image_id}").status == 202
        assert admin.request("GET", "/v2.16/cache").json() == {
            "cached_images": [],
            "queued_images": [image_id],
        }
        assert admin.request("DELETE", "/v2/cache", {CLEAR: "nonsense"}).status == 400
        assert admin.request("DELETE", "/v2/cache", {CLEAR: "cache"}).status == 204
        assert admin.request("GET", "/v2/cache").json()["queued_images"] == [image_id]
        assert admin.request("DELETE", "/v2/cache", {CLEAR: "queue"}).status == 204
        assert admin.request("GET", "/v2/cache").json()["queued_images"] == []
        assert admin.request("PUT", f"/v2/cache/{image_id}").status == 202
        assert admin.request("DELETE", f"/v2/cache/{image_id}").status == 204
        assert admin.request("GET", "/v2/cache").json()["queued_images"] == []
        assert admin.request("PUT", f"/v2/cache/{uuid.uuid4()}").status == 404
        assert admin.request("POST", "/v2/cache").status == 405

        versions = {
            v["id"]: v["status"] for v in admin.request("GET", "/versions").json()["versions"]
        }
        assert versions["v2.16"] == "CURRENT"
        assert versions["v2.14"] == "SUPPORTED"
        assert [v for v, status in versions.items() if status == "CURRENT"] == ["v2.16"]
    finally:
        server.close()


def test_without_a_cache_there_is_no_v2_cache_api(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        api = Api(server.url)
        assert api.request("GET", "/v2/cache").status == 404
        versions = {v["id"] for v in api.request("GET", "/versions").json()["versions"]}
        assert "v2.9" in versions
        assert not versions & {"v2.14", "v2.16"}
        assert api.request("GET", "/v2.16/images").status == 300  # not a version here
    finally:
        server.close()
