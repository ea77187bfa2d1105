"""python-glanceclient's v1 library, unmodified, against `osimage serve` in both auth modes.

Every call goes through `glanceclient.Client('1', endpoint, token=...)`; the server is a
real process on loopback. Spec §16 describes what the client sends and expects.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from glanceclient import exc

from tests.interop.helpers import Sources, Target, latin1_view, md5, payload, poll, unique
from tests.support.server import Server

pytestmark = pytest.mark.e2e

Catalogue = tuple[str, dict[str, Any]]
FORMATS = {"disk_format": "raw", "container_format": "bare"}


def names(images: Any) -> list[str]:
    return [image.name for image in images]


def tagged(gc: Any, target: Target, tag: str, **kwargs: Any) -> list[Any]:
    """Images carrying the property suite=<tag>, listed through glanceclient."""
    filters = dict(kwargs.pop("filters", {}))
    filters["properties"] = {**filters.get("properties", {}), "suite": tag}
    return list(gc.images.list(filters=filters, **target.list_kwargs, **kwargs))


# ---- create ----------------------------------------------------------------------------


def test_create_with_file_object_streams_and_records_metadata(
    gc: Any, target: Target, tmp_path: Path
) -> None:
    data = payload(300_000, "file-object")
    source = tmp_path / "disk.img"
    source.write_bytes(data)
    name = unique("file")
    with source.open("rb") as handle:
        created = gc.images.create(
            name=name, disk_format="qcow2", container_format="bare", data=handle,
            min_disk=2, min_ram=256, properties={"distro": "debian", "arch": "x86_64"},
        )  # fmt: skip
    assert created.status == "active"
    assert created.size == len(data)
    assert created.checksum == md5(data)
    assert created.owner == target.project
    assert created.properties == {"distro": "debian", "arch": "x86_64"}

    got = gc.images.get(created.id)
    assert (got.name, got.status, got.size, got.checksum) == (name, "active", len(data), md5(data))
    assert (got.disk_format, got.container_format, got.min_disk, got.min_ram) == (
        "qcow2", "bare", 2, 256,
    )  # fmt: skip
    assert (got.is_public, got.protected, got.deleted) == (False, False, False)
    assert got.properties == {"distro": "debian", "arch": "x86_64"}

    body = gc.images.data(created.id)
    assert len(body) == len(data)
    assert b"".join(body) == data  # glanceclient checks the md5 while iterating


@pytest.mark.file_store  # corrupts the stored file
def test_data_md5_check_is_live(gc: Any, target: Target) -> None:
    """glanceclient's md5 check runs against the server's checksum header: corrupt the
    stored file behind the server's back and the download fails in the client."""
    data = payload(70_000, "corrupt-me")
    image = gc.images.create(name=unique("md5"), data=io.BytesIO(data), **FORMATS)
    target.blob(image.id).write_bytes(bytes(len(data)))  # same size, other bytes
    with pytest.raises(IOError, match="Corrupt image download"):
        b"".join(gc.images.data(image.id))
    assert b"".join(gc.images.data(image.id, do_checksum=False)) == bytes(len(data))


def test_create_with_location_proxies_the_source(gc: Any, target: Target, sources: Sources) -> None:
    data = payload(20_000, "location")
    name = unique("loc")
    url = sources.add(name, data)
    image = gc.images.create(name=name, location=url, **FORMATS)
    assert image.status == "active"
    assert image.size == len(data)  # read from the source, as no size was given
    assert "location" not in image.to_dict()
    fetched = sources.fetches(name)
    assert b"".join(gc.images.data(image.id, do_checksum=False)) == data
    assert sources.fetches(name) == fetched + 1  # the data stayed at the URL
    assert "location" not in gc.images.get(image.id).to_dict()


def test_create_with_copy_from_copies_the_source(gc: Any, target: Target, sources: Sources) -> None:
    data = payload(150_000, "copy-from")
    name = unique("copy")
    url = sources.add(name, data)
    image = gc.images.create(name=name, copy_from=url, **FORMATS)
    assert image.status in {"queued", "saving", "active"}
    done = poll(lambda: gc.images.get(image.id), lambda i: i.status in {"active", "killed"}, "copy")
    assert (done.status, done.size, done.checksum) == ("active", len(data), md5(data))
    del sources.blobs[f"/{name}"]  # the copy no longer needs its source
    assert b"".join(gc.images.data(image.id)) == data


def test_reserve_then_update_with_data(gc: Any, target: Target) -> None:
    data = payload(100_000, "reserve")
    reserved = gc.images.create(name=unique("reserve"), properties={"stage": "one"}, **FORMATS)
    assert (reserved.status, reserved.size, reserved.checksum) == ("queued", 0, None)
    uploaded = gc.images.update(reserved.id, data=io.BytesIO(data))
    assert (uploaded.status, uploaded.size, uploaded.checksum) == ("active", len(data), md5(data))
    assert uploaded.properties == {"stage": "one"}
    assert b"".join(gc.images.data(reserved.id)) == data
    # Data goes only into a queued image (409). glanceclient also sends the new size,
    # which a non-admin may not change on an active image: that check comes first (§9.5).
    refusal = exc.HTTPConflict if target.admin else exc.HTTPForbidden
    with pytest.raises(refusal):
        gc.images.update(reserved.id, data=io.BytesIO(b"more"))
    assert gc.images.get(reserved.id).checksum == md5(data)


# ---- update and delete -----------------------------------------------------------------


def test_update_merges_properties_unless_purging(gc: Any, target: Target) -> None:
    image = gc.images.create(name=unique("props"), properties={"a": "1", "b": "2"}, **FORMATS)
    merged = gc.images.update(image.id, properties={"c": "3"})
    assert merged.properties == {"a": "1", "b": "2", "c": "3"}
    purged = gc.images.update(image.id, properties={"a": "9"}, purge_props=True)
    assert purged.properties == {"a": "9"}
    renamed = gc.images.update(image.id, name="renamed", min_ram=512)
    assert (renamed.name, renamed.min_ram, renamed.properties) == ("renamed", 512, {"a": "9"})
    got = gc.images.get(image.id)
    assert (got.name, got.min_ram, got.properties) == ("renamed", 512, {"a": "9"})


def test_protected_image_refuses_delete_until_unprotected(gc: Any, target: Target) -> None:
    image = gc.images.create(name=unique("prot"), protected=True, **FORMATS)
    assert gc.images.get(image.id).protected is True
    with pytest.raises(exc.HTTPForbidden):
        gc.images.delete(image.id)
    gc.images.update(image.id, protected=False)
    gc.images.delete(image.id)


def test_delete(gc: Any, target: Target) -> None:
    data = b"to be deleted"
    name = unique("del")
    image = gc.images.create(name=name, data=io.BytesIO(data), **FORMATS)
    gc.images.delete(image.id)
    if target.admin:  # admins still see the record, marked deleted (spec §9.6)
        got = gc.images.get(image.id)
        assert (got.status, got.deleted) == ("deleted", True)
    else:
        with pytest.raises(exc.HTTPNotFound):
            gc.images.get(image.id)
    with pytest.raises(exc.HTTPNotFound):
        gc.images.data(image.id)
    with pytest.raises(exc.HTTPNotFound):
        gc.images.delete(image.id)
    assert list(gc.images.list(filters={"name": name}, **target.list_kwargs)) == []


def test_errors_arrive_as_glanceclient_exceptions(gc: Any, target: Target) -> None:
    with pytest.raises(exc.HTTPNotFound):
        gc.images.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(exc.HTTPBadRequest, match="Invalid disk format"):
        gc.images.create(name=unique("bad"), disk_format="floppy", container_format="bare")
    image = gc.images.create(name=unique("dup"), **FORMATS)
    with pytest.raises(exc.HTTPConflict):
        gc.images.create(id=image.id, name=unique("dup"), **FORMATS)


# ---- list ------------------------------------------------------------------------------


@pytest.fixture
def catalogue(gc: Any, target: Target) -> Catalogue:
    """Four images sharing the property suite=<tag>: three active of sizes 10/20/30, one queued."""
    tag = unique("suite")
    specs = {
        "a": ("raw", "bare", 10, "x"),
        "b": ("qcow2", "ovf", 20, "y"),
        "c": ("raw", "ovf", 30, "x"),
    }
    made = {}
    for key, (disk, container, size, kind) in specs.items():
        made[key] = gc.images.create(
            name=f"{tag}-{key}", disk_format=disk, container_format=container,
            data=io.BytesIO(payload(size, key)), properties={"suite": tag, "kind": kind},
        )  # fmt: skip
    made["d"] = gc.images.create(name=f"{tag}-d", properties={"suite": tag}, **FORMATS)
    return tag, made


def test_list_with_filters(gc: Any, target: Target, catalogue: Catalogue) -> None:
    tag, made = catalogue

    def listed(**filters: Any) -> set[str]:
        return {image.name[-1] for image in tagged(gc, target, tag, filters=filters)}

    assert listed() == {"a", "b", "c", "d"}
    assert listed(disk_format="raw") == {"a", "c", "d"}
    assert listed(container_format="ovf") == {"b", "c"}
    assert listed(size_min=20) == {"b", "c"}
    assert listed(size_max=20) == {"a", "b", "d"}
    assert listed(status="queued") == {"d"}
    assert listed(name=f"{tag}-b") == {"b"}
    assert listed(properties={"kind": "x"}) == {"a", "c"}
    assert listed(properties={"kind": "x"}, disk_format="raw", size_min=15) == {"c"}
    one = tagged(gc, target, tag, filters={"name": f"{tag}-c"})[0]
    assert (one.id, one.size, one.checksum) == (made["c"].id, 30, md5(payload(30, "c")))
    assert one.properties == {"suite": tag, "kind": "x"}


def test_list_sorts(gc: Any, target: Target, catalogue: Catalogue) -> None:
    tag, _ = catalogue
    by = {
        ("size", "asc"): ["d", "a", "b", "c"],
        ("size", "desc"): ["c", "b", "a", "d"],
        ("name", "asc"): ["a", "b", "c", "d"],
        ("name", "desc"): ["d", "c", "b", "a"],
    }
    for (key, direction), expected in by.items():
        got = [i.name[-1] for i in tagged(gc, target, tag, sort_key=key, sort_dir=direction)]
        assert got == expected, (key, direction)
    default = [i.name[-1] for i in tagged(gc, target, tag)]
    assert default == ["d", "c", "b", "a"]  # newest first


def test_list_pages_with_page_size(gc: Any, target: Target) -> None:
    tag = unique("pages")
    for n in range(7):
        gc.images.create(name=f"{tag}-{n}", properties={"suite": tag}, **FORMATS)
    request_ids: list[str] = []
    got = tagged(gc, target, tag, page_size=2, sort_key="name", sort_dir="asc",
                 return_req_id=request_ids)  # fmt: skip
    assert names(got) == [f"{tag}-{n}" for n in range(7)]
    assert len(request_ids) == 4  # pages of 2, 2, 2 and 1
    assert len(set(request_ids)) == 4
    limited = tagged(gc, target, tag, page_size=3, limit=5, sort_key="name", sort_dir="desc")
    assert names(limited) == [f"{tag}-{n}" for n in (6, 5, 4, 3, 2)]


# ---- members ---------------------------------------------------------------------------


def members_of(gc: Any, image_id: str) -> dict[str, bool]:
    found = gc.image_members.list(image=image_id)
    assert all(m.image_id == image_id for m in found)
    return {m.member_id: m.can_share for m in found}


def test_members_create_list_replace_delete(gc: Any, target: Target) -> None:
    image = gc.images.create(name=unique("share"), **FORMATS)
    gc.image_members.create(image, "p-bob", can_share=True)
    gc.image_members.create(image.id, "p-carol")
    assert members_of(gc, image.id) == {"p-bob": True, "p-carol": False}

    gc.image_members.replace(image, [{"member_id": "p-dave", "can_share": False},
                                     {"member_id": "p-bob"}])  # fmt: skip
    # an entry without can_share keeps the member's previous value (spec §9.7)
    assert members_of(gc, image.id) == {"p-dave": False, "p-bob": True}

    gc.image_members.delete(image.id, "p-dave")
    assert members_of(gc, image.id) == {"p-bob": True}
    with pytest.raises(exc.HTTPNotFound):
        gc.image_members.delete(image.id, "p-dave")

    # one (image, member) pair: queens answered 405 (glanceclient turned it into []);
    # osimage answers the membership
    pair = gc.image_members.list(image=image.id, member="p-bob")
    assert [(m.image_id, m.member_id, m.can_share) for m in pair] == [(image.id, "p-bob", True)]


def test_members_listed_by_member(gc: Any, target: Target) -> None:
    image = gc.images.create(name=unique("by-member"), **FORMATS)
    member = unique("p")
    assert gc.image_members.list(member=member) == []
    gc.image_members.create(image, member, can_share=True)
    shared = gc.image_members.list(member=member)
    assert [(s.image_id, s.member_id, s.can_share) for s in shared] == [(image.id, member, True)]


def test_member_project_sees_the_shared_image(tokens_source_server: Server) -> None:
    """Tokens mode: alice shares a private image with bob's project, then stops."""
    owner = Target("tokens", tokens_source_server, "alice-token", "p-alice", admin=False)
    alice, bob = owner.glance(), owner.glance("bob-token")
    data = payload(5_000, "shared")
    image = alice.images.create(name=unique("private"), data=io.BytesIO(data), **FORMATS)
    with pytest.raises(exc.HTTPNotFound):
        bob.images.get(image.id)
    assert image.id not in {i.id for i in bob.images.list()}

    alice.image_members.create(image, "p-bob")
    assert bob.images.get(image.id).owner == "p-alice"
    assert b"".join(bob.images.data(image.id)) == data
    assert image.id in {i.id for i in bob.images.list()}
    with pytest.raises((exc.HTTPForbidden, exc.HTTPNotFound)):
        bob.images.update(image.id, name="mine now")

    alice.image_members.delete(image.id, "p-bob")
    with pytest.raises(exc.HTTPNotFound):
        bob.images.get(image.id)


# ---- text ------------------------------------------------------------------------------


def test_non_ascii_names_and_property_values(gc: Any, target: Target) -> None:
    """glanceclient percent-encodes every header; the server decodes it back to the text.

    JSON answers (create, update, list) give the text exactly. `images.get` reads HEAD
    headers, which carry raw UTF-8: http.client decodes them as latin-1, so glanceclient
    shows mojibake that `.encode('latin-1').decode('utf-8')` repairs (see docs/compat.md).
    """
    name = unique("Grüße ✓ образ")
    value = "välue ✓ 100% a%20b"
    image = gc.images.create(name=name, properties={"note": value}, **FORMATS)
    assert (image.name, image.properties) == (name, {"note": value})

    [listed] = gc.images.list(filters={"name": name}, **target.list_kwargs)
    assert (listed.id, listed.name, listed.properties) == (image.id, name, {"note": value})
    [by_value] = gc.images.list(filters={"properties": {"note": value}}, **target.list_kwargs)
    assert by_value.id == image.id

    renamed = gc.images.update(image.id, name=name + " ü")
    assert renamed.name == name + " ü"

    got = gc.images.get(image.id)
    assert got.name == latin1_view(name + " ü")
    assert got.properties == {"note": latin1_view(value)}
    assert got.name.encode("latin-1").decode("utf-8") == name + " ü"


def test_percent_signs_survive(gc: Any, target: Target) -> None:
    """A literal % in a name or value is sent as %25 and stored as %."""
    name = unique("100% done a%20b")
    image = gc.images.create(name=name, properties={"p": "%41"}, **FORMATS)
    assert (image.name, image.properties) == (name, {"p": "%41"})
    got = gc.images.get(image.id)
    assert (got.name, got.properties) == (name, {"p": "%41"})


def test_non_ascii_property_key(gc: Any, target: Target) -> None:
    """Header names must be ASCII: the server percent-escapes such a key in the name.

    glanceclient reads header names verbatim, so HEAD shows the escaped key; JSON answers
    (create, update, list) carry it exactly.
    """
    image = gc.images.create(name=unique("key"), properties={"schlüssel": "wert"}, **FORMATS)
    assert image.properties == {"schlüssel": "wert"}
    got = gc.images.get(image.id)
    assert {k.lower(): v for k, v in got.properties.items()} == {"schl%c3%bcssel": "wert"}


def test_versioned_endpoint_form(target: Target) -> None:
    """`Client(endpoint='.../v1')`, the form glanceclient recommends, picks v1 as well."""
    import glanceclient

    client = glanceclient.Client(endpoint=f"{target.server.url}/v1", token=target.token)
    image = client.images.create(name=unique("v1-url"), **FORMATS)
    assert client.images.get(image.id).status == "queued"


# ---- the rest of the v1 library surface --------------------------------------------------


def test_versions_list(gc: Any) -> None:
    """`GET /versions`: the v2 entries (one CURRENT), then v1.1 and v1.0, DEPRECATED."""
    versions = gc.versions.list()
    v1 = [v for v in versions if v["id"].startswith("v1")]
    v2 = [v for v in versions if v["id"].startswith("v2")]
    assert [(v["id"], v["status"]) for v in v1] == [("v1.1", "DEPRECATED"), ("v1.0", "DEPRECATED")]
    assert all(v["links"][0]["href"].endswith("/v1/") for v in v1)
    assert [v["status"] for v in v2].count("CURRENT") == 1
    assert all(v["links"][0]["href"].endswith("/v2/") for v in v2)
    assert len(v1) + len(v2) == len(versions)


def test_find_and_image_resource_methods(gc: Any, target: Target) -> None:
    name = unique("find")
    data = payload(3_000, name)
    gc.images.create(name=name, data=io.BytesIO(data), is_public=target.admin, **FORMATS)
    found = gc.images.find(name=name)  # lists, then matches on the client side
    assert (found.name, found.checksum) == (name, md5(data))
    assert b"".join(found.data()) == data
    found.update(min_disk=4)
    assert gc.images.get(found.id).min_disk == 4
    found.delete()
    with pytest.raises(exc.HTTPNotFound):
        gc.images.data(found.id)


def test_request_ids_are_returned(gc: Any) -> None:
    ids: list[str] = []
    image = gc.images.create(name=unique("req-id"), return_req_id=ids, **FORMATS)
    gc.images.get(image.id, return_req_id=ids)
    gc.images.delete(image.id, return_req_id=ids)
    assert len(ids) == 3
    assert all(i.startswith("req-") for i in ids)
    assert len(set(ids)) == 3


def test_list_by_owner_is_filtered_on_the_client(gc: Any, target: Target) -> None:
    """`owner=` makes glanceclient send is_public=None (all images, for admins; ignored
    for others) and drop other owners locally; `owner=''` keeps ownerless images."""
    name = unique("owner")
    image = gc.images.create(name=name, **FORMATS)
    mine = list(gc.images.list(owner=target.project or "", filters={"name": name}))
    assert [i.id for i in mine] == [image.id]
    assert list(gc.images.list(owner="p-nobody", filters={"name": name})) == []


def test_changes_since_lists_deleted_images(gc: Any, target: Target) -> None:
    name = unique("since")
    image = gc.images.create(name=name, **FORMATS)
    gc.images.delete(image.id)
    assert list(gc.images.list(filters={"name": name}, **target.list_kwargs)) == []
    since = {"name": name, "changes-since": "2000-01-01T00:00:00"}
    [gone] = gc.images.list(filters=since, **target.list_kwargs)
    assert (gone.id, gone.status, gone.deleted) == (image.id, "deleted", True)


def test_is_public_filter_for_admins(noauth_source_server: Server) -> None:
    admin = Target("noauth", noauth_source_server, "any-token", None, admin=True).glance()
    name = unique("visibility")
    public = admin.images.create(name=name, is_public=True, **FORMATS)
    private = admin.images.create(name=name, is_public=False, **FORMATS)

    def listed(**kwargs: Any) -> set[str]:
        return {i.id for i in admin.images.list(filters={"name": name}, **kwargs)}

    assert listed() == {public.id}  # an admin without a project: public images
    assert listed(is_public=True) == {public.id}
    assert listed(is_public=False) == {private.id}
    assert listed(is_public=None) == {public.id, private.id}


def test_member_get(gc: Any) -> None:
    """`image_members.get` reads one membership: queens answered 405, osimage answers it."""
    image = gc.images.create(name=unique("member-get"), **FORMATS)
    gc.image_members.create(image, "p-bob")
    got = gc.image_members.get(image, "p-bob")
    assert (got.member_id, got.can_share) == ("p-bob", False)
    with pytest.raises(exc.HTTPNotFound):
        gc.image_members.get(image, "p-nobody")


@pytest.mark.file_store  # names the file store (x-image-meta-store)
def test_create_with_store_checksum_and_owner(gc: Any, target: Target) -> None:
    data = payload(2_000, "store")
    owner = {"owner": "p-other"} if target.admin else {}
    image = gc.images.create(
        name=unique("store"), data=io.BytesIO(data), store="file", checksum=md5(data),
        **owner, **FORMATS,
    )  # fmt: skip
    assert (image.status, image.checksum) == ("active", md5(data))
    assert image.owner == ("p-other" if target.admin else target.project)
    with pytest.raises(exc.HTTPBadRequest):  # the server verifies a declared checksum
        gc.images.create(
            name=unique("bad-sum"), data=io.BytesIO(data), checksum="0" * 32, **FORMATS
        )


def test_keystoneauth_session(target: Target) -> None:
    """`Client('1', session=...)`, how glanceclient is driven from a keystoneauth1 session."""
    import glanceclient
    from keystoneauth1 import session, token_endpoint

    auth = token_endpoint.Token(endpoint=target.server.url, token=target.token)
    client = glanceclient.Client("1", session=session.Session(auth=auth))
    data = payload(1_000, "session")
    image = client.images.create(name=unique("session"), data=io.BytesIO(data), **FORMATS)
    got = client.images.get(image.id)
    # HEAD leaves out null fields (an ownerless image has no owner header); reading such
    # an attribute makes glanceclient lazy-load, which fails with a session client
    assert got.to_dict().get("owner") == target.project
    assert b"".join(client.images.data(image.id)) == data
