"""A copy flood against a slow loopback source: caps per project and per process (429/503
naming the setting, nobody else affected), DELETE cancelling a copy, copy_timeout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.test_uploads import status_of, stored_bytes
from tests.support.http import request
from tests.support.polling import wait_until
from tests.support.server import Server, start_server
from tests.support.source import Script, Source, serve_source
from tests.support.stored import store_kind, stored_for

pytestmark = pytest.mark.e2e

SLOW = Script(str(64 * 1024 * 1024), str(64 * 1024 * 1024), b"", trickle=16384, interval=0.05)


@pytest.fixture
def source() -> Iterator[Source]:
    with serve_source() as src:
        src.scripts["/slow"] = SLOW
        yield src


def copy(server: Server, url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {
        "x-image-meta-name": "copied",
        "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare",
        "x-glance-api-copy-from": url,
    }
    if token:
        headers["x-auth-token"] = token
    status, _, body = request(server, "POST", "/v1/images", headers)
    return status, body


def image_id_of(body: bytes) -> str:
    return str(json.loads(body)["image"]["id"])


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        tmp_path,
        "--allow-source-network", "127.0.0.1/32",
        "--copy-max", "2",
        "--copy-max-per-project", "1",
        auth="tokens",
    )  # fmt: skip
    yield server
    server.close()


def test_copy_caps_refuse_the_flooding_tenant_and_spare_the_others(
    capped: Server, source: Source
) -> None:
    url = source.url("/slow")
    status, body = copy(capped, url, "alice-token")
    assert status == 201, body
    first = image_id_of(body)
    for _ in range(5):  # alice floods: each refused at once, naming the limit
        status, body = copy(capped, url, "alice-token")
        assert status == 429, body
        assert b"copy_max_per_project" in body
    status, body = copy(capped, url, "bob-token")
    assert status == 201, body
    status, body = copy(capped, url, "carol-token")  # the process cap
    assert status == 503, body
    assert b"copy_max" in body
    wait_until(lambda: source.active == 2, "two copies running")
    status, _, _ = request(capped, "GET", "/v1/images", {"x-auth-token": "carol-token"})
    assert status == 200  # everyone else is still served
    status, _, _ = request(capped, "DELETE", f"/v1/images/{first}", {"x-auth-token": "alice-token"})
    assert status == 200
    wait_until(lambda: source.active == 1, "the deleted image's copy stopped")
    status, body = copy(capped, url, "alice-token")  # the slot came back
    assert status == 201, body
    assert "Traceback" not in capped.log()


def test_delete_cancels_a_copy_and_removes_its_partial_data(tmp_path: Path, source: Source) -> None:
    server = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32")
    try:
        status, body = copy(server, source.url("/slow"))
        assert status == 201, body
        image_id = image_id_of(body)
        wait_until(lambda: status_of(server, image_id) == "saving", "the copy started")
        wait_until(lambda: source.served > 300_000, "data copied")
        if store_kind(server) == "file":  # the data existed
            wait_until(lambda: stored_bytes(server, image_id) > 0, "partial data stored")
        status, _, _ = request(server, "DELETE", f"/v1/images/{image_id}")
        assert status == 200
        wait_until(lambda: source.active == 0, "the source connection closed")
        wait_until(lambda: stored_for(server, image_id) == [], "partial data removed")
        assert status_of(server, image_id) == "deleted"
        assert f"copy of image {image_id} cancelled" in server.log()
    finally:
        server.close()


def test_a_copy_past_copy_timeout_is_killed_and_leaves_nothing(
    tmp_path: Path, source: Source
) -> None:
    server = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32", "--copy-timeout", "2")
    try:
        status, body = copy(server, source.url("/slow"))
        assert status == 201, body
        image_id = image_id_of(body)
        wait_until(lambda: source.served > 100_000, "data copied")
        wait_until(lambda: status_of(server, image_id) == "killed", "the copy timed out")
        wait_until(lambda: stored_for(server, image_id) == [], "partial data removed")
        wait_until(lambda: source.active == 0, "the source connection closed")
        assert "copy_timeout" in server.log()
    finally:
        server.close()
