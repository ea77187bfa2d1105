"""Every `conn.image` method against a real `osimage serve` over loopback."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osimage import exceptions
from osimage.connection import ConfigException, Connection
from osimage.image.v1._proxy import MD5_KEY, OBJECT_KEY, SHA256_KEY
from osimage.image.v1.image import Image
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e


def unique(prefix: str = "img") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def conn(server: Server) -> Iterator[Connection]:
    with Connection(endpoint=server.url, environ={}) as connection:
        yield connection


@pytest.fixture
def fresh(fresh_server: Server) -> Iterator[Connection]:
    with Connection(endpoint=fresh_server.url, environ={}) as connection:
        yield connection


def as_user(server: Server, who: str) -> Connection:
    return Connection(endpoint=server.url, token=f"{who}-token", environ={})


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    with path.open("wb") as out:
        for i in range(3):
            out.write(bytes([i]) * (1024 * 1024 + 7))
    return path


def digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def every_image_named(conn: Connection, name: str) -> list[Image]:
    """Admin view including deleted and killed images (changes-since lifts the exclusions)."""
    return list(conn.image.images(name=name, changes_since="2000-01-01T00:00:00"))


# ---- images ---------------------------------------------------------------------------


def test_create_image_streams_a_file_and_records_checksums(conn, payload):
    name = unique()
    image = conn.image.create_image(name, filename=payload, disk_format="raw", distro="debian")
    md5, sha256 = digests(payload.read_bytes())
    assert image.status == "active"
    assert image.size == payload.stat().st_size
    assert image.checksum == md5
    assert image.properties[MD5_KEY] == md5
    assert image.properties[SHA256_KEY] == sha256
    assert image.properties[OBJECT_KEY] == f"images/{name}"
    assert image.properties["distro"] == "debian"
    fetched = conn.image.get_image(image.id)
    assert fetched.checksum == md5
    assert fetched.properties == image.properties
    assert conn.image.download_image(image) == payload.read_bytes()


def test_create_image_skips_an_identical_image(fresh, payload):
    name = unique()
    first = fresh.image.create_image(name, filename=payload, disk_format="raw")
    again = fresh.image.create_image(name, filename=payload, disk_format="raw")
    assert again.id == first.id
    assert [i.id for i in fresh.image.images()] == [first.id]
    duplicate = fresh.image.create_image(
        name, filename=payload, disk_format="raw", allow_duplicates=True
    )
    assert duplicate.id != first.id
    different = fresh.image.create_image(name, data=b"other bytes", disk_format="raw")
    assert different.id not in {first.id, duplicate.id}
    assert len(list(fresh.image.images(name=name))) == 3


def test_create_image_from_an_iterator_hashes_while_streaming(conn):
    chunks = [b"a" * 1000, b"b" * 2000, b"c"]
    data = b"".join(chunks)
    image = conn.image.create_image(
        unique(), data=iter(chunks), disk_format="raw", allow_duplicates=True
    )
    md5, sha256 = digests(data)
    assert image.checksum == md5
    assert conn.image.get_image(image).properties[SHA256_KEY] == sha256


def test_create_image_fields_and_meta(conn):
    image = conn.image.create_image(
        unique(),
        data=b"x" * 10,
        disk_format="qcow2",
        container_format="ovf",
        min_disk=2,
        min_ram=512,
        protected=False,
        meta={"note": "via meta"},
        os_type="linux",
    )
    fetched = conn.image.get_image(image)
    assert (fetched.disk_format, fetched.container_format) == ("qcow2", "ovf")
    assert (fetched.min_disk, fetched.min_ram, fetched.is_protected) == (2, 512, False)
    assert fetched.properties["note"] == "via meta"
    assert fetched.properties["os_type"] == "linux"


def test_create_image_of_an_empty_file_is_active(conn, tmp_path):
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    image = conn.image.create_image(unique(), filename=empty, disk_format="raw")
    assert image.status == "active"
    assert image.size == 0


def test_a_rejected_upload_deletes_the_reserved_image(conn, payload):
    name = unique()
    with pytest.raises(exceptions.BadRequestException):
        conn.image.create_image(
            name, filename=payload, disk_format="raw", md5="0" * 32, allow_duplicates=True
        )
    left = every_image_named(conn, name)
    assert len(left) == 1  # it was reserved ...
    assert left[0].status == "deleted"  # ... and is gone, not left killed or queued
    assert conn.image.find_image(name) is None


def test_a_broken_data_source_deletes_the_reserved_image(conn):
    name = unique()

    def broken() -> Iterator[bytes]:
        yield b"x" * 65536
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):
        conn.image.create_image(name, data=broken(), disk_format="raw", allow_duplicates=True)
    assert [i.status for i in every_image_named(conn, name)] == ["deleted"]


def test_validate_checksum_refuses_a_wrong_md5_before_any_request(conn):
    name = unique()
    with pytest.raises(exceptions.InvalidRequest, match="differ"):
        conn.image.create_image(
            name, data=b"abc", disk_format="raw", md5="f" * 32, validate_checksum=True
        )
    assert every_image_named(conn, name) == []
    with pytest.raises(exceptions.InvalidRequest):
        conn.image.create_image(
            name, data=iter([b"abc"]), disk_format="raw", validate_checksum=True
        )


def test_images_filters_and_pages(fresh):
    names = [unique("page") for _ in range(5)]
    for n in names:
        fresh.image.create_image(n, data=n.encode(), disk_format="raw", flavor="small")
    listed = list(fresh.image.images(limit=2))  # page size 2: three requests
    assert sorted(i.name for i in listed) == sorted(names)
    assert [i.name for i in fresh.image.images(name=names[2])] == [names[2]]
    assert len(list(fresh.image.images(properties={"flavor": "small"}))) == 5
    by_name = [i.name for i in fresh.image.images(sort_key="name", sort_dir="asc")]
    assert by_name == sorted(names)


def test_get_find_and_missing_images(conn):
    image = conn.image.create_image(unique(), data=b"find me", disk_format="raw")
    assert conn.image.find_image(image.id).id == image.id
    assert conn.image.find_image(image.name).id == image.id
    assert conn.image.find_image("no-such-image") is None
    with pytest.raises(exceptions.NotFoundException):
        conn.image.find_image("no-such-image", ignore_missing=False)
    with pytest.raises(exceptions.NotFoundException):
        conn.image.get_image(str(uuid.uuid4()))
    twin = conn.image.create_image(image.name, data=b"twin", disk_format="raw")
    assert twin.id != image.id
    with pytest.raises(exceptions.DuplicateResource):
        conn.image.find_image(image.name)


def test_update_image_keeps_properties_unless_purged(conn):
    image = conn.image.create_image(unique(), data=b"u", disk_format="raw", keep="me")
    new_name = image.name + "-2"
    renamed = conn.image.update_image(image, name=new_name, min_ram=64)
    assert renamed.name == new_name
    assert conn.image.get_image(image.id).min_ram == 64
    assert conn.image.get_image(image).properties["keep"] == "me"
    purged = conn.image.update_image(image.id, purge_props=True, properties={"only": "this"})
    assert purged.properties == {"only": "this"}
    assert conn.image.get_image(image).properties == {"only": "this"}


def test_update_image_properties_merge_and_purge(conn):
    image = conn.image.reserve_image(name=unique(), properties={"a": "1", "b": "2"})
    assert conn.image.update_image_properties(image, {"c": 3}, purge=False) is True
    assert conn.image.get_image(image).properties == {"a": "1", "b": "2", "c": "3"}
    assert conn.image.update_image_properties(image, {"a": "1"}, purge=False) is False
    assert conn.image.update_image_properties(image.id, {"b": "2"}, purge=True, d="4") is True
    assert conn.image.get_image(image).properties == {"b": "2", "d": "4"}


def test_reserve_then_upload(conn, payload):
    image = conn.image.reserve_image(name=unique(), disk_format="raw", container_format="bare")
    assert image.status == "queued"
    uploaded = conn.image.upload_image_data(image.id, filename=str(payload))
    assert uploaded.status == "active"
    assert uploaded.size == payload.stat().st_size
    other = conn.image.reserve_image(name=unique(), disk_format="raw", container_format="bare")
    assert conn.image.upload_image_data(other, iter([b"12", b"34"])).size == 4


def test_upload_image_in_one_request(conn):
    image = conn.image.upload_image(
        container_format="bare", disk_format="raw", data=b"one shot", name=unique()
    )
    assert image.status == "active"
    assert image.checksum == hashlib.md5(b"one shot").hexdigest()


def test_download_image_to_a_path_a_file_and_a_stream(conn, payload, tmp_path):
    image = conn.image.create_image(unique(), filename=payload, disk_format="raw")
    target = tmp_path / "out.raw"
    assert conn.image.download_image(image, output=target) is None
    assert target.read_bytes() == payload.read_bytes()
    with (tmp_path / "out2.raw").open("wb") as handle:
        conn.image.download_image(image.id, output=handle, chunk_size=4096)
    assert (tmp_path / "out2.raw").read_bytes() == payload.read_bytes()
    with conn.image.download_image(image, stream=True) as stream:
        assert b"".join(stream) == payload.read_bytes()


def test_delete_image_and_wait_for_delete(conn):
    image = conn.image.create_image(unique(), data=b"bye", disk_format="raw")
    conn.image.delete_image(image)
    gone = conn.image.wait_for_delete(image, interval=0.05, wait=10)
    assert gone.id == image.id
    conn.image.delete_image(image)  # ignore_missing=True by default
    with pytest.raises(exceptions.NotFoundException):
        conn.image.delete_image(image, ignore_missing=False)


def test_wait_for_status(conn):
    active = conn.image.create_image(unique(), data=b"ok", disk_format="raw")
    assert conn.image.wait_for_status(active, "active", interval=0.01, wait=5).id == active.id
    queued = conn.image.reserve_image(name=unique())
    with pytest.raises(exceptions.ResourceTimeout):
        conn.image.wait_for_status(queued, "active", interval=0.01, wait=0)
    doomed = conn.image.reserve_image(
        name=unique(), disk_format="raw", container_format="bare", checksum="0" * 32
    )
    with pytest.raises(exceptions.BadRequestException):
        conn.image.upload_image_data(doomed, b"does not match")
    with pytest.raises(exceptions.ResourceFailure, match="killed"):
        conn.image.wait_for_status(doomed, "active", interval=0.01, wait=5)


# ---- copy-from and location ---------------------------------------------------------


class _Blob(http.server.BaseHTTPRequestHandler):
    body = b"remote image bytes " * 1000

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        self._headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def blob_url() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/disk.raw"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def sources_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    srv = start_server(tmp_path_factory.mktemp("sources"), "--allow-source-network", "127.0.0.1/32")
    with Connection(endpoint=srv.url, environ={}) as connection:
        yield connection
    srv.stop()


def test_create_image_with_copy_from_waits_until_active(sources_conn, blob_url):
    image = sources_conn.image.create_image(
        unique(), copy_from=blob_url, disk_format="raw", container_format="bare", wait=True
    )
    assert image.status == "active"
    assert sources_conn.image.download_image(image) == _Blob.body


def test_create_image_with_a_location(sources_conn, blob_url):
    image = sources_conn.image.create_image(
        unique(), location=blob_url, disk_format="raw", container_format="bare"
    )
    assert image.status == "active"
    assert sources_conn.image.download_image(image) == _Blob.body
    with pytest.raises(exceptions.InvalidRequest):
        sources_conn.image.create_image(unique(), data=b"x", location=blob_url)


# ---- members ------------------------------------------------------------------------


def test_members_add_list_replace_remove(conn):
    image = conn.image.create_image(unique(), data=b"shared", disk_format="raw")
    added = conn.image.add_member(image, "p-one")
    assert (added.member_id, added.can_share, added.image_id) == ("p-one", False, image.id)
    conn.image.add_member(image.id, "p-two", can_share=True)
    listed = {m.member_id: m.can_share for m in conn.image.members(image)}
    assert listed == {"p-one": False, "p-two": True}
    conn.image.replace_members(image, ["p-two", {"member_id": "p-three", "can_share": True}])
    listed = {m.member_id: m.can_share for m in conn.image.members(image)}
    assert listed == {"p-two": True, "p-three": True}
    shared = conn.image.shared_images("p-three")
    assert [(s.image_id, s.can_share) for s in shared] == [(image.id, True)]
    conn.image.remove_member(image, "p-two")
    assert [m.member_id for m in conn.image.members(image)] == ["p-three"]
    conn.image.remove_member(image, "p-two")  # ignore_missing=True
    with pytest.raises(exceptions.NotFoundException):
        conn.image.remove_member(image, "p-two", ignore_missing=False)


def test_sharing_between_projects(tokens_server):
    with as_user(tokens_server, "alice") as alice, as_user(tokens_server, "bob") as bob:
        # Other suites share their own images with p-bob on this server: look at ours only.
        image = alice.image.create_image(unique(), data=b"for bob", disk_format="raw")
        assert image.id is not None
        assert bob.image.find_image(image.id) is None
        assert image.id not in {s.image_id for s in bob.image.shared_images("p-bob")}
        alice.image.add_member(image, "p-bob")
        ours = [s for s in bob.image.shared_images("p-bob") if s.image_id == image.id]
        assert [(s.image_id, s.can_share) for s in ours] == [(image.id, False)]
        assert bob.image.download_image(image.id) == b"for bob"
        alice.image.remove_member(image, "p-bob")
        assert image.id not in {s.image_id for s in bob.image.shared_images("p-bob")}
        assert bob.image.find_image(image.id) is None
        alice.image.delete_image(image)
        with pytest.raises(exceptions.InvalidRequest, match="project"):
            bob.image.shared_images()  # a bare token names no project


def test_wrong_token_is_an_http_401(tokens_server):
    conn = Connection(endpoint=tokens_server.url, token="nope", environ={})
    with conn, pytest.raises(exceptions.HttpException) as caught:
        list(conn.image.images())
    assert caught.value.status_code == 401


# ---- keystone and the service catalog -----------------------------------------------


class FakeKeystone(http.server.BaseHTTPRequestHandler):
    """Just enough Keystone v3 to issue a token and a catalog: POST /v3/auth/tokens.

    The password `good` yields the token `alice-token` (which the tokens server knows)
    for project p-alice; the catalog lists image endpoints per region and interface,
    only one of which (region R2, internal) is the real server.
    """

    image_url = ""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        password = body["auth"]["identity"]["password"]["user"]["password"]
        if self.path != "/v3/auth/tokens" or password != "good":
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"code": 401, "message": "bad password"}}')
            return
        dead = "http://127.0.0.1:9"
        endpoints = [
            {"id": "1", "interface": "public", "region_id": "R2", "region": "R2", "url": dead},
            {"id": "2", "interface": "internal", "region_id": "R1", "region": "R1", "url": dead},
            {"id": "3", "interface": "internal", "region_id": "R2", "region": "R2",
             "url": self.image_url},
        ]  # fmt: skip
        domain = {"id": "default", "name": "Default"}
        token = {
            "methods": ["password"],
            "expires_at": "2099-01-01T00:00:00.000000Z",
            "issued_at": "2020-01-01T00:00:00.000000Z",
            "user": {"id": "u-alice", "name": "alice", "domain": domain},
            "project": {"id": "p-alice", "name": "alice", "domain": domain},
            "roles": [{"id": "r1", "name": "member"}],
            "catalog": [{"id": "c1", "type": "image", "name": "glance", "endpoints": endpoints}],
        }
        data = json.dumps({"token": token}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Subject-Token", "alice-token")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def fake_keystone(image_url: str) -> Iterator[str]:
    """Run a FakeKeystone whose catalog points at `image_url`; yield its v3 auth URL."""
    handler = type("Keystone", (FakeKeystone,), {"image_url": image_url})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v3"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def keystone_url(tokens_server: Server) -> Iterator[str]:
    with fake_keystone(tokens_server.url) as url:
        yield url


def keystone_settings(url: str, password: str = "good") -> dict[str, Any]:
    return {
        "auth_url": url,
        "username": "alice",
        "password": password,
        "project_name": "alice",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "identity_api_version": "3",
    }


def test_the_image_endpoint_comes_from_the_catalog(keystone_url, tokens_server):
    settings = keystone_settings(keystone_url)
    conn = Connection(region_name="R2", interface="internal", environ={}, **settings)
    with conn:
        assert conn.config.auth_type == "v3password"
        assert conn.image_endpoint == tokens_server.endpoint
        image = conn.image.create_image(unique(), data=b"via keystone", disk_format="raw")
        assert image.owner == "p-alice"
        conn.image.add_member(image, "p-carol")
        with as_user(tokens_server, "carol") as carol:
            assert image.id in {s.image_id for s in carol.image.shared_images("p-carol")}
            # The default member is the token's project (p-alice). Other suites may share
            # with p-alice on this server too, so compare with the explicit call and look
            # for an image shared just now, rather than expecting an empty list.
            for_alice = carol.image.create_image(unique(), data=b"to alice", disk_format="raw")
            assert for_alice.id not in {s.image_id for s in conn.image.shared_images()}
            carol.image.add_member(for_alice, "p-alice")
            shared = {s.image_id for s in conn.image.shared_images()}
            assert for_alice.id in shared
            assert image.id not in shared  # alice's own image, shared with p-carol only
            assert shared == {s.image_id for s in conn.image.shared_images("p-alice")}
            carol.image.delete_image(for_alice)
        conn.image.delete_image(image)


def test_a_catalog_without_the_endpoint_says_what_to_set(keystone_url):
    settings = keystone_settings(keystone_url)
    conn = Connection(region_name="R9", interface="internal", environ={}, **settings)
    with conn, pytest.raises(ConfigException, match="OS_IMAGE_ENDPOINT_OVERRIDE"):
        _ = conn.image
