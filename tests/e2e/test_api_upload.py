"""Spec §8 and §11: the status lifecycle, its operation matrix, and upload semantics."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.api_client import Api, Response, md5, meta, unique
from tests.e2e.conftest import SIZE_CAP
from tests.support.polling import wait_until
from tests.support.server import Server

pytestmark = pytest.mark.e2e

DATA = b"*" * 5120


def stored_files(server: Server, image_id: str) -> list[Path]:
    """Files under the server's data dir whose name mentions the image (partials too)."""
    return [p for p in server.data_dir.rglob("*") if p.is_file() and image_id in p.name]


def status_of(api: Api, image_id: str) -> str | None:
    return api.head(image_id).meta.get("status")


class HeldUpload:
    """A chunked PUT upload that sends one chunk, then waits until released."""

    def __init__(self, api: Api, image_id: str, rest: bytes = b"y" * 1024) -> None:
        self.release = threading.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None

        def chunks() -> Iterator[bytes]:
            yield b"x" * 1024
            self.release.wait(30)
            yield rest

        def run() -> None:
            try:
                self.response = api.update(image_id, {}, chunks())
            except BaseException as exc:  # reported by finish()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> Response:
        self.release.set()
        self.thread.join(60)
        if self.error:
            raise self.error
        assert self.response is not None
        return self.response


@pytest.fixture
def held(api: Api) -> Iterator[tuple[str, HeldUpload]]:
    image = api.reserve(name=unique("held"), disk_format="raw", container_format="bare")
    upload = HeldUpload(api, image["id"])
    wait_until(lambda: status_of(api, image["id"]) == "saving", "status saving")
    yield image["id"], upload
    upload.release.set()
    upload.thread.join(60)


# -- §8 operation matrix -----------------------------------------------------------


def test_queued_row(api: Api) -> None:
    image = api.reserve(name=unique(), is_public=True, disk_format="raw", container_format="bare")
    image_id = image["id"]
    assert api.head(image_id).status == 200
    got = api.get(image_id)
    assert got.status == 404
    assert "not active" in got.text
    assert image_id in [i["id"] for i in api.list(name=image["name"]).images]
    assert api.update(image_id, meta(min_ram=1)).status == 200
    assert api.update(image_id, {}, b"abc").image["status"] == "active"


def test_saving_row(api: Api, held: tuple[str, HeldUpload]) -> None:
    image_id, upload = held
    assert api.head(image_id).status == 200
    assert api.get(image_id).status == 404
    assert api.update(image_id, {}, b"second upload").status == 409
    assert api.update(image_id, meta(min_ram=5)).status == 200
    assert image_id in api.detail_ids(status="saving", is_public="none")
    resp = upload.finish()
    assert resp.status == 200, resp
    assert resp.image["status"] == "active"
    assert resp.image["min_ram"] == 5
    assert api.get(image_id).body == b"x" * 1024 + b"y" * 1024


def test_active_row(api: Api) -> None:
    image = api.upload(DATA, name=unique(), is_public=True)
    image_id = image["id"]
    assert api.head(image_id).status == 200
    assert api.get(image_id).status == 200
    changed = api.update(image_id, meta(min_disk=3))
    assert changed.status == 200
    assert changed.header("etag") == image["checksum"]
    assert api.update(image_id, {}, b"again").status == 409
    assert api.detail_ids(name=image["name"]) == [image_id]
    assert api.delete(image_id).status == 200


def _killed(api: Api) -> str:
    image = api.reserve(
        name=unique("killed"), size=5121, disk_format="raw", container_format="bare", is_public=True
    )
    resp = api.update(image["id"], {}, DATA)
    assert resp.status == 400, resp
    return str(image["id"])


def test_killed_row(api: Api) -> None:
    image_id = _killed(api)
    head = api.head(image_id)
    assert head.status == 200
    assert head.meta["status"] == "killed"
    name = head.meta["name"]
    assert api.get(image_id).status == 404
    assert api.update(image_id, meta(min_ram=1)).status == 200
    assert api.update(image_id, {}, b"retry").status == 409
    assert api.detail_ids(name=name) == []
    assert api.detail_ids(name=name, status="killed") == []
    assert api.detail_ids(name=name, **{"changes-since": "2000-01-01"}) == [image_id]
    assert api.delete(image_id).status == 200


def test_deleted_row_for_admins(api: Api) -> None:
    image = api.upload(DATA, name=unique(), is_public=True)
    image_id = image["id"]
    assert api.delete(image_id).status == 200
    assert api.head(image_id).status == 200
    assert api.get(image_id).status == 404
    assert api.update(image_id, meta(min_ram=1)).status == 403
    assert api.update(image_id, {}, b"x").status == 403
    assert api.delete(image_id).status == 404
    assert api.detail_ids(name=image["name"]) == []
    [record] = api.detail(name=image["name"], **{"changes-since": "2000-01-01"}).images
    assert record["id"] == image_id
    assert record["status"] == "deleted"
    assert record["deleted"] is True
    assert record["deleted_at"] is not None
    assert record["properties"] == {}


def test_delete_during_upload_gives_the_uploader_412(
    api: Api, held: tuple[str, HeldUpload], server: Server
) -> None:
    image_id, upload = held
    assert api.delete(image_id).status == 200
    resp = upload.finish()
    assert resp.status == 412, resp
    head = api.head(image_id)
    assert head.meta["status"] == "deleted"
    assert head.meta["deleted"] == "True"
    wait_until(lambda: stored_files(server, image_id) == [], "upload data removed")


# -- §11.1 what counts as data --------------------------------------------------------


def test_content_length_zero_is_no_data(api: Api) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    resp = api.update(image["id"], {"Content-Type": "application/octet-stream"}, b"")
    assert resp.status == 200, resp
    assert resp.image["status"] == "queued"


def test_chunked_upload_on_create(api: Api) -> None:
    chunks = [b"a" * 1000, b"b" * 7, b"c" * 65536]
    resp = api.create(meta(disk_format="raw", container_format="bare"), iter(chunks))
    assert resp.status == 201, resp
    whole = b"".join(chunks)
    assert resp.image["size"] == len(whole)
    assert resp.image["checksum"] == md5(whole)
    assert api.get(resp.image["id"]).body == whole


def test_chunked_empty_body_counts_as_data(api: Api) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    resp = api.update(image["id"], {}, iter([]))
    assert resp.status == 200, resp
    assert resp.image["status"] == "active"
    assert resp.image["size"] == 0


def test_a_larger_upload_streams_through(api: Api) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.md5()
    count = 128  # 8 MiB

    def chunks() -> Iterator[bytes]:
        for _ in range(count):
            digest.update(piece)
            yield piece

    resp = api.create(meta(disk_format="raw", container_format="bare"), chunks())
    assert resp.status == 201, resp
    assert resp.image["size"] == len(piece) * count
    assert resp.image["checksum"] == digest.hexdigest()
    got = api.get(resp.image["id"])
    assert got.header("content-length") == str(len(piece) * count)
    assert hashlib.md5(got.body).hexdigest() == digest.hexdigest()


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream; charset=binary", "Application/Octet-Stream"]
)
def test_content_type_parameters_are_tolerated(api: Api, content_type: str) -> None:
    resp = api.create(
        {**meta(disk_format="raw", container_format="bare"), "Content-Type": content_type}, b"ok"
    )
    assert resp.status == 201, resp


@pytest.mark.parametrize(
    "content_type", [None, "not octet-stream", "application/octet-st", "application/json"]
)
def test_data_needs_octet_stream(api: Api, content_type: str | None) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    headers = [("Content-Type", content_type)] if content_type else []
    resp = api.request("PUT", f"/v1/images/{image['id']}", headers, b"data")
    assert resp.status == 400, resp
    assert "Content-Type must be application/octet-stream" in resp.text
    assert status_of(api, image["id"]) != "active"


def test_post_with_bad_content_type_is_400(api: Api) -> None:
    headers = {**meta(disk_format="raw", container_format="ovf"), "Content-Type": "text/plain"}
    resp = api.request("POST", "/v1/images", headers, b"data")
    assert resp.status == 400, resp
    assert "Content-Type must be application/octet-stream" in resp.text


# -- §11.3 verification ------------------------------------------------------------


@pytest.mark.parametrize(
    "declared",
    [
        {"size": 5121},
        {"checksum": "foobar"},
        {"size": 5121, "checksum": md5(DATA)},
        {"size": 5, "checksum": "asdf"},
    ],
)
def test_mismatch_on_create_is_400_killed_and_nothing_stored(
    api: Api, server: Server, declared: dict[str, Any]
) -> None:
    tag = unique()
    resp = api.create(
        meta(name=tag, disk_format="raw", container_format="ovf", is_public=True, **declared), DATA
    )
    assert resp.status == 400, resp
    assert api.detail_ids(name=tag) == []  # killed images are not listed
    ids = api.detail_ids(name=tag, **{"changes-since": "2000-01-01"})
    for image_id in ids:
        assert status_of(api, image_id) == "killed"
        assert api.get(image_id).status == 404
        assert stored_files(server, image_id) == []


@pytest.mark.parametrize("declared", [{"size": 5121}, {"checksum": "0" * 32}])
def test_mismatch_on_put_is_400_killed_and_nothing_stored(
    api: Api, server: Server, declared: dict[str, Any]
) -> None:
    image = api.reserve(disk_format="raw", container_format="bare", **declared)
    resp = api.update(image["id"], {}, DATA)
    assert resp.status == 400, resp
    assert status_of(api, image["id"]) == "killed"
    assert api.get(image["id"]).status == 404
    assert stored_files(server, image["id"]) == []
    assert api.update(image["id"], {}, DATA).status == 409


def test_reserved_size_is_enforced_on_a_later_upload(api: Api) -> None:
    image = api.reserve(size=19, disk_format="raw", container_format="bare")
    resp = api.update(image["id"], {}, b"x" * 20)
    assert resp.status == 400, resp
    ok = api.reserve(size=19, disk_format="raw", container_format="bare")
    good = api.update(ok["id"], {}, b"x" * 19)
    assert good.status == 200, good
    assert good.image["size"] == 19


@pytest.mark.file_store
def test_successful_upload_is_stored(api: Api, server: Server) -> None:
    # the positive control for the "nothing stored" checks above
    image = api.upload(DATA)
    assert stored_files(server, image["id"]) != []
    assert api.delete(image["id"]).status == 200
    wait_until(lambda: stored_files(server, image["id"]) == [], "data removed on delete")


@pytest.mark.file_store
def test_data_removed_behind_the_servers_back(api: Api, server: Server) -> None:
    image = api.upload(DATA)
    files = stored_files(server, image["id"])
    assert files
    for path in files:
        path.unlink()
    head = api.head(image["id"])
    assert head.status == 200
    assert head.meta["status"] == "active"
    assert api.get(image["id"]).status == 404


def test_client_disconnect_kills_the_image(api: Api, server: Server) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        sock.sendall(
            (
                f"PUT /v1/images/{image['id']} HTTP/1.1\r\nHost: {api.host}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
            ).encode()
            + b"z" * 4096
        )
        wait_until(lambda: status_of(api, image["id"]) == "saving", "status saving")
    wait_until(lambda: status_of(api, image["id"]) == "killed", "status killed")
    wait_until(lambda: stored_files(server, image["id"]) == [], "partial data removed")


# -- §11.2 size cap (--image-size-cap 10000) -------------------------------------------


def test_content_length_above_cap_is_400_and_creates_nothing(limited: Api) -> None:
    tag = unique()
    resp = limited.create(
        meta(name=tag, disk_format="raw", container_format="bare", is_public=True),
        b"x" * (SIZE_CAP + 1),
    )
    assert resp.status == 400, resp
    assert f"larger than {SIZE_CAP} bytes" in resp.text
    assert limited.detail(name=tag, is_public="none").images == []


def test_declared_size_above_cap_is_400_and_creates_nothing(limited: Api) -> None:
    tag = unique()
    resp = limited.create(meta(name=tag, is_public=True, size=SIZE_CAP + 1))
    assert resp.status == 400, resp
    assert limited.detail(name=tag, is_public="none").images == []


def test_exactly_the_cap_is_accepted(limited: Api) -> None:
    resp = limited.create(meta(disk_format="raw", container_format="bare"), b"x" * SIZE_CAP)
    assert resp.status == 201, resp
    assert resp.image["size"] == SIZE_CAP


def test_chunked_stream_above_cap_is_413_and_killed(limited: Api, limits_server: Server) -> None:
    image = limited.reserve(disk_format="raw", container_format="bare")
    chunks = (b"x" * 1000 for _ in range(11))
    resp = limited.update(image["id"], {}, chunks)
    assert resp.status == 413, resp
    assert status_of(limited, image["id"]) == "killed"
    assert stored_files(limits_server, image["id"]) == []


def test_chunked_with_declared_size_must_match(limited: Api) -> None:
    image = limited.reserve(disk_format="raw", container_format="bare", size=100)
    chunks = (b"x" * 1000 for _ in range(2))
    resp = limited.update(image["id"], {}, chunks)
    assert resp.status == 400, resp
    assert status_of(limited, image["id"]) == "killed"


def test_put_declared_size_above_cap_is_400_and_changes_nothing(limited: Api) -> None:
    image = limited.reserve(name="capped")
    resp = limited.update(image["id"], meta(size=SIZE_CAP + 1, name="changed"))
    assert resp.status == 400, resp
    head = limited.head(image["id"])
    assert head.meta["name"] == "capped"
    assert head.meta["size"] == "0"


def test_put_content_length_above_cap_is_400(limited: Api) -> None:
    image = limited.reserve(disk_format="raw", container_format="bare")
    resp = limited.update(image["id"], {}, b"x" * (SIZE_CAP + 1))
    assert resp.status == 400, resp
    assert status_of(limited, image["id"]) == "queued"


# -- races (§18 76; ARCHITECTURE invariant 3: one status machine) ------------------------


def _together(count: int, action: Callable[[int], Response]) -> list[Response]:
    barrier = threading.Barrier(count)
    results: list[Response] = []

    def run(i: int) -> None:
        barrier.wait()
        results.append(action(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_racing_uploads_have_exactly_one_winner(api: Api, server: Server) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    bodies = [bytes([65 + i]) * 200_000 for i in range(4)]
    results = _together(4, lambda i: api.update(image["id"], {}, bodies[i]))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 409, 409, 409], results
    [winner] = [r for r in results if r.status == 200]
    got = api.get(image["id"])
    assert got.body == bodies[ord(got.body[:1]) - 65]
    assert winner.image["checksum"] == md5(got.body)
    assert status_of(api, image["id"]) == "active"


def test_racing_deletes_have_exactly_one_winner(api: Api) -> None:
    image = api.upload(DATA)
    results = _together(4, lambda i: api.delete(image["id"]))
    assert sorted(r.status for r in results) == [200, 404, 404, 404], results
