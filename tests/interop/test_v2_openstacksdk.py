"""openstacksdk with its default image API (v2), unmodified, against `osimage serve`.

The Connection is given the server's unversioned root as the image endpoint, so
keystoneauth's version discovery (the `/` document) picks v2 as it does on a cloud.
Runs once per auth mode (`target`: noauth, where the caller is an admin without a
project, and tokens, where it is alice of p-alice and bob of p-bob is the other project).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack import connection
from openstack import exceptions as sdk_exc

from tests.interop.helpers import Sources, Target, md5, payload, poll, unique
from tests.support.server import Server

pytestmark = [
    pytest.mark.e2e,
    # openstacksdk 4.x warns about its own internals, not about how it is called
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning"),
    # create_image(filename=...) and stage_image(filename=...) open the file and never
    # close it; the garbage collector reports that later
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <_io.FileIO:pytest.PytestUnraisableExceptionWarning"
    ),
]

FORMATS = {"disk_format": "raw", "container_format": "bare"}


def connect(target: Target, token: str | None = None) -> Any:
    """A Connection straight to the server's root (no clouds.yaml, no OS_*)."""
    if target.mode == "noauth":
        auth: dict[str, Any] = {"auth_type": "none", "auth": {"endpoint": target.server.url}}
    else:
        auth = {
            "auth_type": "admin_token",
            "auth": {"token": token or target.token, "endpoint": target.server.url},
        }
    return connection.Connection(image_endpoint_override=target.server.url, **auth)


@pytest.fixture
def conn(target: Target) -> Iterator[Any]:
    made = connect(target)
    yield made
    made.close()


@pytest.fixture
def bob(target: Target) -> Iterator[Any]:
    """Another project's connection (tokens); in noauth every caller is the same admin."""
    made = connect(target, "bob-token")
    yield made
    made.close()


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def make(conn: Any, tmp_path: Path, data: bytes, **attrs: Any) -> Any:
    source = tmp_path / f"{unique('src')}.raw"
    source.write_bytes(data)
    name = attrs.pop("name", None) or unique("sdk2")
    return conn.image.create_image(name, filename=str(source), wait=True, **FORMATS, **attrs)


def test_discovery_picks_v2(conn: Any, target: Target) -> None:
    assert conn.image.api_version == "2"
    assert conn.image.get_endpoint().rstrip("/") == f"{target.server.url}/v2"


def test_create_image_from_file_uploads_and_verifies(
    conn: Any, target: Target, tmp_path: Path
) -> None:
    data = payload(300_000, "sdk2-create")
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    name = unique("sdk2-create")
    image = conn.image.create_image(
        name, filename=str(source), wait=True, validate_checksum=True, distro="debian",
        min_ram=128, **FORMATS,
    )  # fmt: skip
    got = conn.image.get_image(image.id)
    assert (got.name, got.status, got.size) == (name, "active", len(data))
    assert (got.checksum, got.hash_algo, got.hash_value) == (md5(data), "sha512", sha512(data))
    assert (got.disk_format, got.container_format, got.min_ram) == ("raw", "bare", 128)
    assert got.visibility == "shared"  # v2's default for a create without visibility
    assert got.owner == target.project
    # custom keys come back as they were sent: openstacksdk's own and the caller's
    assert got.properties["distro"] == "debian"
    assert got.properties["owner_specified.openstack.md5"] == md5(data)
    assert got.properties["owner_specified.openstack.sha256"] == hashlib.sha256(data).hexdigest()
    assert got.properties["owner_specified.openstack.object"] == f"images/{name}"
    # a second create_image of the same name and data finds the first (no duplicate)
    again = conn.image.create_image(
        name, filename=str(source), wait=True, validate_checksum=True, **FORMATS
    )
    assert again.id == image.id
    assert [i.id for i in conn.image.images(name=name)] == [image.id]


def test_images_filters_sorting_and_paging(conn: Any, tmp_path: Path) -> None:
    name = unique("sdk2-list")
    made = [make(conn, tmp_path, payload(100 * (n + 1), f"list{n}"), name=name) for n in range(2)]
    made.append(conn.image.create_image(name, allow_duplicates=True, **FORMATS))  # queued
    ids = {i.id for i in made}
    assert {i.id for i in conn.image.images(name=name)} == ids
    # one image per request: openstacksdk follows the `next` links
    paged = [i.id for i in conn.image.images(name=name, limit=1)]
    assert sorted(paged) == sorted(ids)
    assert len(paged) == 3
    assert [i.id for i in conn.image.images(name=name, status="queued")] == [made[2].id]
    assert [i.size for i in conn.image.images(name=name, sort="size:desc", status="active")] == [
        200,
        100,
    ]
    assert [i.size for i in conn.image.images(name=name, size_min=150)] == [200]
    assert {i.id for i in conn.image.images(name=name, visibility="shared")} == ids
    assert list(conn.image.images(name=name, visibility="public")) == []


def test_find_and_get(conn: Any, tmp_path: Path) -> None:
    image = make(conn, tmp_path, b"find me")
    by_name = conn.image.find_image(image.name)
    by_id = conn.image.find_image(image.id)
    got = conn.image.get_image(image.id)
    for found in (by_name, by_id, got):
        assert (found.id, found.name, found.status, found.checksum) == (
            image.id, image.name, "active", md5(b"find me"),
        )  # fmt: skip
    assert conn.image.find_image(unique("absent")) is None
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.find_image(unique("absent"), ignore_missing=False)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.get_image("00000000-0000-4000-8000-000000000000")
    conn.image.create_image(image.name, allow_duplicates=True, **FORMATS)
    with pytest.raises(sdk_exc.DuplicateResource):
        conn.image.find_image(image.name)


def test_hidden_images_are_found_by_name(conn: Any) -> None:
    """find_image asks again with os_hidden=true when the plain list has no match."""
    image = conn.image.create_image(unique("sdk2-hidden"), allow_duplicates=True, **FORMATS)
    conn.image.update_image(image, is_hidden=True)
    assert conn.image.get_image(image.id).is_hidden is True
    assert list(conn.image.images(name=image.name)) == []
    assert [i.id for i in conn.image.images(name=image.name, os_hidden=True)] == [image.id]
    assert conn.image.find_image(image.name).id == image.id


def test_update_image_core_field_and_custom_property(conn: Any, tmp_path: Path) -> None:
    image = make(conn, tmp_path, b"update me", distro="debian", keep="this")
    renamed = unique("sdk2-renamed")
    merged = {**image.properties, "distro": "ubuntu", "arch": "x86"}
    updated = conn.image.update_image(image, name=renamed, min_disk=3, properties=merged)
    assert (updated.name, updated.min_disk) == (renamed, 3)
    got = conn.image.get_image(image.id)
    assert (got.name, got.min_disk) == (renamed, 3)
    assert got.properties == merged  # the JSON patch named only distro and arch
    assert got.checksum == md5(b"update me")  # the data is untouched


def test_update_image_with_keywords_replaces_custom_properties(conn: Any, tmp_path: Path) -> None:
    """Custom keys given as keywords become the image's whole set of custom properties:
    openstacksdk sends `remove` for every other one, and the server applies it."""
    image = make(conn, tmp_path, b"replace", distro="debian", keep="this")
    conn.image.update_image(image, distro="ubuntu", min_ram=8)
    got = conn.image.get_image(image.id)
    assert (got.properties, got.min_ram) == ({"distro": "ubuntu"}, 8)


def test_download_image_stream_and_output(conn: Any, tmp_path: Path) -> None:
    data = payload(1_500_000, "sdk2-download")  # several chunks
    image = make(conn, tmp_path, data)
    out = tmp_path / "out.raw"
    conn.image.download_image(image, output=str(out), stream=True)
    assert out.read_bytes() == data
    resp = conn.image.download_image(image, stream=True)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-MD5"] == md5(data)
    assert b"".join(resp.iter_content(65536)) == data
    assert conn.image.download_image(image).content == data  # stream=False: verified whole


@pytest.mark.file_store
def test_download_image_checksum_check_catches_corruption(
    conn: Any, target: Target, tmp_path: Path
) -> None:
    data = payload(200_000, "sdk2-corrupt")
    image = make(conn, tmp_path, data)
    blob = target.blob(image.id)
    assert blob.read_bytes() == data
    blob.write_bytes(b"X" + data[1:])  # same size, different bytes
    with pytest.raises(sdk_exc.SDKException, match="checksum mismatch"):
        conn.image.download_image(image, output=str(tmp_path / "bad.raw"), stream=True)
    with pytest.raises(sdk_exc.InvalidResponse, match="checksum mismatch"):
        conn.image.download_image(image)


def test_tags(conn: Any, tmp_path: Path) -> None:
    image = make(conn, tmp_path, b"tagged")
    conn.image.add_tag(image, "blue")
    conn.image.add_tag(image, "green")
    conn.image.add_tag(image, "blue")  # a set: no duplicate
    assert sorted(conn.image.get_image(image.id).tags) == ["blue", "green"]
    assert [i.id for i in conn.image.images(tag="green", name=image.name)] == [image.id]
    conn.image.remove_tag(image, "blue")
    assert conn.image.get_image(image.id).tags == ["green"]
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.remove_tag(image, "blue")


def test_deactivate_and_reactivate(conn: Any, bob: Any, target: Target, tmp_path: Path) -> None:
    data = b"deactivate me"
    image = make(conn, tmp_path, data)
    conn.image.deactivate_image(image)
    assert conn.image.get_image(image.id).status == "deactivated"
    if target.admin:  # admins still get the data of a deactivated image
        assert conn.image.download_image(image).content == data
    else:
        # openstacksdk does not raise on the 403: a streamed answer carries the status,
        # and an unstreamed one is hashed like data, so it reports a checksum mismatch
        assert conn.image.download_image(image, stream=True).status_code == 403
        with pytest.raises(sdk_exc.InvalidResponse, match="checksum mismatch"):
            conn.image.download_image(image)
    conn.image.reactivate_image(image)
    assert conn.image.get_image(image.id).status == "active"
    assert conn.image.download_image(image).content == data


def test_members_add_accept_list(conn: Any, bob: Any, target: Target, tmp_path: Path) -> None:
    image = make(conn, tmp_path, b"shared data")
    member = conn.image.add_member(image, member_id="p-bob")
    assert (member.member_id, member.image_id, member.status) == ("p-bob", image.id, "pending")
    assert [(m.member_id, m.status) for m in conn.image.members(image)] == [("p-bob", "pending")]
    if target.mode == "tokens":
        # bob may read it at once, but lists it only once accepted
        assert bob.image.get_image(image.id).id == image.id
        assert image.id not in {i.id for i in bob.image.images(name=image.name)}
        assert [i.id for i in bob.image.images(name=image.name, member_status="pending")] == [
            image.id
        ]
        with pytest.raises(sdk_exc.ForbiddenException):  # the owner cannot accept for bob
            conn.image.update_member("p-bob", image, status="accepted")
        accepted = bob.image.update_member("p-bob", image, status="accepted")
        assert accepted.status == "accepted"
        assert [i.id for i in bob.image.images(name=image.name)] == [image.id]
        assert bob.image.download_image(image).content == b"shared data"
        assert [m.member_id for m in bob.image.members(image)] == ["p-bob"]
    else:
        accepted = conn.image.update_member("p-bob", image, status="accepted")  # admin may
        assert accepted.status == "accepted"
    assert [(m.member_id, m.status) for m in conn.image.members(image)] == [("p-bob", "accepted")]
    rejected = (bob if target.mode == "tokens" else conn).image.update_member(
        "p-bob", image, status="rejected"
    )
    assert rejected.status == "rejected"
    conn.image.remove_member("p-bob", image)
    assert list(conn.image.members(image)) == []


def test_stage_and_import_glance_direct(conn: Any, tmp_path: Path) -> None:
    data = payload(250_000, "sdk2-stage")
    image = conn.image.create_image(unique("sdk2-stage"), allow_duplicates=True, **FORMATS)
    assert image.status == "queued"
    assert "glance-direct" in image.image_import_methods
    staged = conn.image.stage_image(image, data=data)
    assert staged.status == "uploading"
    assert conn.image.import_image(staged, method="glance-direct").status_code == 202
    done = poll(
        lambda: conn.image.get_image(image.id),
        lambda i: i.status in {"active", "killed", "queued"},
        "the glance-direct import",
    )
    assert (done.status, done.size, done.checksum) == ("active", len(data), md5(data))
    assert done.hash_value == sha512(data)
    assert conn.image.download_image(image).content == data


def test_import_web_download(conn: Any, sources: Sources) -> None:
    data = payload(180_000, "sdk2-web")
    name = unique("sdk2-web")
    uri = sources.add(name, data)
    image = conn.image.create_image(name, allow_duplicates=True, **FORMATS)
    assert "web-download" in image.image_import_methods
    assert conn.image.import_image(image, method="web-download", uri=uri).status_code == 202
    done = poll(
        lambda: conn.image.get_image(image.id),
        lambda i: i.status in {"active", "killed", "queued"},
        "the web-download import",
    )
    assert (done.status, done.size, done.checksum) == ("active", len(data), md5(data))
    assert sources.fetches(name) == 1
    assert conn.image.download_image(image).content == data


def test_import_web_download_from_loopback_needs_the_option(
    server: Server, sources: Sources
) -> None:
    """A server started without `--allow-source-network` refuses a loopback URI up front
    (the guard of v1's `copy_from`); the image stays `queued` and nothing is fetched.
    openstacksdk's import_image returns the answer without raising on its status."""
    name = unique("sdk2-guard")
    uri = sources.add(name, b"never fetched")
    plain: Any = connection.Connection(
        auth_type="none", auth={"endpoint": server.url}, image_endpoint_override=server.url
    )
    try:
        image = plain.image.create_image(name, allow_duplicates=True, **FORMATS)
        resp = plain.image.import_image(image, method="web-download", uri=uri)
        assert resp.status_code == 400
        assert f"URI for web-download does not pass filtering: {uri}" in resp.text
        assert plain.image.get_image(image.id).status == "queued"
    finally:
        plain.close()
    assert sources.fetches(name) == 0


def test_delete_image(conn: Any, tmp_path: Path) -> None:
    image = make(conn, tmp_path, b"gone soon")
    assert conn.image.get_image(image.id).status == "active"
    conn.image.delete_image(image)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.get_image(image.id)
    assert conn.image.find_image(image.name) is None
    conn.image.delete_image(image.id)  # ignore_missing=True by default
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.delete_image(image.id, ignore_missing=False)
    protected = make(conn, tmp_path, b"keep me", is_protected=True)
    with pytest.raises(sdk_exc.ForbiddenException):
        conn.image.delete_image(protected)
    assert conn.image.get_image(protected.id).status == "active"
    conn.image.update_image(protected, is_protected=False)
    conn.image.delete_image(protected)
    assert conn.image.find_image(protected.id) is None
