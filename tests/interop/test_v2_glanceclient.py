"""python-glanceclient's v2 library, unmodified, against `osimage serve` in both auth modes.

`glanceclient.Client(endpoint=<root>/v2, token=...)`: glanceclient fetches the server's schemas
and validates what it gets back against them (spec §20.2), so every call here also
checks that the server's answers match its own schemas.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import glanceclient
import pytest
from glanceclient import exc

from tests.interop.helpers import Sources, Target, md5, payload, poll, unique

pytestmark = pytest.mark.e2e

FORMATS = {"disk_format": "raw", "container_format": "bare"}


def client(target: Target, token: str | None = None) -> Any:
    """The form glanceclient prefers: the version as the endpoint's suffix."""
    return glanceclient.Client(endpoint=f"{target.server.url}/v2", token=token or target.token)


@pytest.fixture
def gc2(target: Target) -> Any:
    return client(target)


def until(gc2: Any, image_id: str, what: str) -> Any:
    done: Callable[[Any], bool] = lambda i: i["status"] in {"active", "killed", "queued"}  # noqa: E731
    return poll(lambda: gc2.images.get(image_id), done, what)


def test_create_upload_get_and_data(gc2: Any, target: Target) -> None:
    data = payload(700_000, "gc2-upload")
    name = unique("gc2")
    image = gc2.images.create(name=name, distro="debian", min_ram=64, **FORMATS)
    assert (image["name"], image["status"], image["size"]) == (name, "queued", None)
    assert (image["visibility"], image["owner"], image["distro"]) == (
        "shared", target.project, "debian",
    )  # fmt: skip
    gc2.images.upload(image["id"], io.BytesIO(data), image_size=len(data))
    got = gc2.images.get(image["id"])
    assert (got["status"], got["size"], got["checksum"]) == ("active", len(data), md5(data))
    assert (got["os_hash_algo"], got["os_hash_value"]) == (
        "sha512",
        hashlib.sha512(data).hexdigest(),
    )
    assert (got["min_ram"], got["distro"]) == (64, "debian")
    assert b"".join(gc2.images.data(image["id"])) == data  # streamed, verified by sha512


def test_upload_without_size_is_chunked(gc2: Any) -> None:
    data = payload(300_000, "gc2-chunked")
    image = gc2.images.create(name=unique("gc2-chunked"), **FORMATS)
    gc2.images.upload(image["id"], io.BytesIO(data))  # no size: a chunked body
    got = gc2.images.get(image["id"])
    assert (got["status"], got["size"], got["checksum"]) == ("active", len(data), md5(data))


def test_data_of_an_image_without_data(gc2: Any) -> None:
    image = gc2.images.create(name=unique("gc2-empty"), **FORMATS)
    body = gc2.images.data(image["id"])  # 204: glanceclient returns no body (None)
    assert body.__wrapped__ is None  # inside its request-id proxy


@pytest.mark.file_store
def test_data_verification_catches_corruption(gc2: Any, target: Target) -> None:
    data = payload(100_000, "gc2-corrupt")
    image = gc2.images.create(name=unique("gc2-corrupt"), **FORMATS)
    gc2.images.upload(image["id"], io.BytesIO(data), image_size=len(data))
    target.blob(image["id"]).write_bytes(b"Y" + data[1:])
    with pytest.raises(IOError, match="Corrupt image download"):
        b"".join(gc2.images.data(image["id"]))


def test_list_filters_and_paging(gc2: Any) -> None:
    name = unique("gc2-list")
    ids = []
    for n in range(3):
        image = gc2.images.create(name=name, **FORMATS)
        gc2.images.upload(image["id"], io.BytesIO(b"x" * (n + 1)), image_size=n + 1)
        ids.append(image["id"])
    listed = list(gc2.images.list(filters={"name": name}, page_size=1))  # follows `next`
    assert sorted(i["id"] for i in listed) == sorted(ids)
    by_size = list(gc2.images.list(filters={"name": name}, sort_key="size", sort_dir="desc"))
    assert [i["size"] for i in by_size] == [3, 2, 1]
    assert [i["size"] for i in gc2.images.list(filters={"name": name, "size_min": 3})] == [3]
    gc2.image_tags.update(ids[0], "first")
    assert [i["id"] for i in gc2.images.list(filters={"name": name, "tag": ["first"]})] == [ids[0]]


def test_list_visibility_hidden_and_member_status(gc2: Any, target: Target) -> None:
    name = unique("gc2-vis")
    private = gc2.images.create(name=name, visibility="private", **FORMATS)
    shared = gc2.images.create(name=name, **FORMATS)
    hidden = gc2.images.create(name=name, os_hidden=True, **FORMATS)

    def ids(caller: Any = gc2, **filters: Any) -> set[str]:
        return {i["id"] for i in caller.images.list(filters={"name": name, **filters})}

    assert ids() == {private["id"], shared["id"]}  # hidden images only when asked for
    assert ids(os_hidden=True) == {hidden["id"]}
    assert ids(visibility="private") == {private["id"]}
    assert ids(visibility="shared") == {shared["id"]}
    if target.mode == "tokens":
        bob = client(target, "bob-token")
        gc2.image_members.create(shared["id"], "p-bob")
        assert ids(bob) == set()
        assert ids(bob, member_status="pending") == {shared["id"]}
        assert ids(bob, visibility="shared", member_status="all") == {shared["id"]}


def test_nova_snapshot_flow(gc2: Any) -> None:
    """What Nova does for a snapshot of a volume-backed server: custom properties on
    create, then a zero-length upload activates the image (spec §20.4)."""
    image = gc2.images.create(
        name=unique("gc2-snap"), image_type="snapshot", instance_uuid=unique("vm"), **FORMATS
    )
    gc2.images.upload(image["id"], io.BytesIO(b""), image_size=0)
    got = gc2.images.get(image["id"])
    assert (got["status"], got["size"], got["image_type"]) == ("active", 0, "snapshot")
    assert got["checksum"] == md5(b"")


def test_update_property_add_replace_remove(gc2: Any) -> None:
    image = gc2.images.create(name=unique("gc2-update"), a="1", b="2", **FORMATS)
    gc2.image_tags.update(image["id"], "kept")  # update then also sends `replace /tags`
    updated = gc2.images.update(image["id"], a="one", c="3", min_disk=5, remove_props=["b"])
    assert (updated["a"], updated["c"], updated["min_disk"]) == ("one", "3", 5)
    assert "b" not in updated
    assert updated["tags"] == ["kept"]
    got = gc2.images.get(image["id"])
    assert ("b" not in got, got["a"], got["tags"]) == (True, "one", ["kept"])


def test_tags(gc2: Any) -> None:
    image = gc2.images.create(name=unique("gc2-tags"), **FORMATS)
    gc2.image_tags.update(image["id"], "red")
    gc2.image_tags.update(image["id"], "a@b.example")
    assert sorted(gc2.images.get(image["id"])["tags"]) == ["a@b.example", "red"]
    gc2.image_tags.delete(image["id"], "red")
    assert gc2.images.get(image["id"])["tags"] == ["a@b.example"]
    with pytest.raises(exc.HTTPNotFound):
        gc2.image_tags.delete(image["id"], "red")


def test_deactivate_reactivate(gc2: Any, target: Target) -> None:
    image = gc2.images.create(name=unique("gc2-deact"), **FORMATS)
    gc2.images.upload(image["id"], io.BytesIO(b"deact"), image_size=5)
    gc2.images.deactivate(image["id"])
    assert gc2.images.get(image["id"])["status"] == "deactivated"
    if not target.admin:
        with pytest.raises(exc.HTTPForbidden):
            gc2.images.data(image["id"])
    gc2.images.reactivate(image["id"])
    assert gc2.images.get(image["id"])["status"] == "active"
    assert b"".join(gc2.images.data(image["id"])) == b"deact"


def test_members(gc2: Any, target: Target) -> None:
    image = gc2.images.create(name=unique("gc2-members"), **FORMATS)
    member = gc2.image_members.create(image["id"], "p-bob")
    assert (member["member_id"], member["image_id"], member["status"]) == (
        "p-bob", image["id"], "pending",
    )  # fmt: skip
    assert [m["member_id"] for m in gc2.image_members.list(image["id"])] == ["p-bob"]
    as_member = client(target, "bob-token") if target.mode == "tokens" else gc2
    if target.mode == "tokens":
        with pytest.raises(exc.HTTPForbidden):  # the owner cannot accept for the member
            gc2.image_members.update(image["id"], "p-bob", "accepted")
        assert image["id"] not in [i["id"] for i in as_member.images.list()]
    updated = as_member.image_members.update(image["id"], "p-bob", "accepted")
    assert updated["status"] == "accepted"
    assert image["id"] in [i["id"] for i in as_member.images.list(filters={"name": image["name"]})]
    assert [m["status"] for m in gc2.image_members.list(image["id"])] == ["accepted"]
    gc2.image_members.delete(image["id"], "p-bob")
    assert list(gc2.image_members.list(image["id"])) == []
    if target.mode == "tokens":
        with pytest.raises(exc.HTTPNotFound):
            as_member.images.get(image["id"])


def test_stage_and_import(gc2: Any) -> None:
    info = gc2.images.get_import_info()
    assert {"glance-direct", "web-download"} <= set(info["import-methods"]["value"])
    data = payload(200_000, "gc2-stage")
    image = gc2.images.create(name=unique("gc2-stage"), **FORMATS)
    gc2.images.stage(image["id"], io.BytesIO(data), image_size=len(data))
    assert gc2.images.get(image["id"])["status"] == "uploading"
    gc2.images.image_import(image["id"], method="glance-direct")
    done = until(gc2, image["id"], "glance-direct import")
    assert (done["status"], done["size"], done["checksum"]) == ("active", len(data), md5(data))
    assert b"".join(gc2.images.data(image["id"])) == data


def test_import_web_download(gc2: Any, sources: Sources) -> None:
    data = payload(90_000, "gc2-web")
    name = unique("gc2-web")
    uri = sources.add(name, data)
    image = gc2.images.create(name=name, **FORMATS)
    gc2.images.image_import(image["id"], method="web-download", uri=uri)
    done = until(gc2, image["id"], "web-download import")
    assert (done["status"], done["checksum"]) == ("active", md5(data))
    assert sources.fetches(name) == 1


def test_delete(gc2: Any) -> None:
    image = gc2.images.create(name=unique("gc2-del"), **FORMATS)
    assert gc2.images.get(image["id"])["status"] == "queued"
    gc2.images.delete(image["id"])
    with pytest.raises(exc.HTTPNotFound):
        gc2.images.get(image["id"])
    with pytest.raises(exc.HTTPNotFound):
        gc2.images.delete(image["id"])
    protected = gc2.images.create(name=unique("gc2-prot"), protected=True, **FORMATS)
    with pytest.raises(exc.HTTPForbidden):
        gc2.images.delete(protected["id"])
    gc2.images.update(protected["id"], protected=False)
    gc2.images.delete(protected["id"])


def test_errors_reach_the_caller(gc2: Any) -> None:
    with pytest.raises(exc.HTTPNotFound):
        gc2.images.get("00000000-0000-4000-8000-000000000000")
    # glanceclient checks values against the server's schema before sending them
    with pytest.raises(TypeError, match="Unable to set 'disk_format' to 'floppy'"):
        gc2.images.create(name=unique("gc2-bad"), disk_format="floppy", container_format="bare")
    image = gc2.images.create(name=unique("gc2-ro"), **FORMATS)
    with pytest.raises(exc.HTTPForbidden):  # read-only attribute
        gc2.images.update(image["id"], checksum="0" * 32)
    gc2.images.upload(image["id"], io.BytesIO(b"once"), image_size=4)
    with pytest.raises(exc.HTTPConflict):  # data into an active image
        gc2.images.upload(image["id"], io.BytesIO(b"twice"), image_size=5)
    assert b"".join(gc2.images.data(image["id"])) == b"once"


@pytest.mark.filterwarnings("ignore:`version` keyword:DeprecationWarning")
def test_client_with_version_argument(target: Target) -> None:
    """`Client('2', <root>)`, the older call shape, works the same."""
    gc2 = glanceclient.Client("2", target.server.url, token=target.token)
    image = gc2.images.create(name=unique("gc2-suffix"), **FORMATS)
    assert gc2.images.get(image["id"])["id"] == image["id"]
