"""Spec §9.1, §9.5, §9.6: create, update and delete, each in its processing order."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.api_client import (
    PREFIX,
    PURGE_PROPS_HEADER,
    Api,
    md5,
    meta,
    props,
    unique,
)

pytestmark = pytest.mark.e2e

DATA = b"*" * 5120


def _props(api: Api, image_id: str) -> dict[str, Any]:
    return api.head(image_id).properties


# -- §9.1 create ------------------------------------------------------------------


def test_create_modes_reserve_and_upload(api: Api) -> None:
    reserved = api.create(meta(name="r", disk_format="raw", container_format="bare"))
    assert reserved.status == 201
    assert reserved.image["status"] == "queued"
    uploaded = api.create(meta(name="u", disk_format="raw", container_format="bare"), DATA)
    assert uploaded.status == 201
    assert uploaded.image["status"] == "active"
    assert uploaded.image["checksum"] == md5(DATA)


def test_create_with_size_zero_is_active_at_once(api: Api) -> None:
    resp = api.create(meta(name="empty", size=0))
    assert resp.status == 201, resp
    assert resp.image["status"] == "active"
    assert resp.image["size"] == 0
    assert resp.image["checksum"] is None
    location = resp.header("location")
    assert location
    path = location.split(f"{api.port}", 1)[1]
    head = api.request("HEAD", path)
    assert head.status == 200
    assert head.meta["size"] == "0"
    assert head.meta["status"] == "active"
    got = api.get(resp.image["id"])
    assert got.status == 200
    assert got.body == b""


def test_create_with_a_declared_size_stays_queued_and_records_it(api: Api) -> None:
    resp = api.create(meta(size=19))
    assert resp.status == 201
    assert resp.image["status"] == "queued"
    assert resp.image["size"] == 19


def test_create_with_a_correct_checksum_is_201(api: Api) -> None:
    resp = api.create(meta(disk_format="raw", container_format="ovf", checksum=md5(DATA)), DATA)
    assert resp.status == 201, resp
    assert resp.image["checksum"] == md5(DATA)


def test_create_with_an_existing_id_is_409(api: Api) -> None:
    image = api.reserve()
    assert api.create(meta(id=image["id"])).status == 409


def test_create_owner_is_null_in_noauth(api: Api) -> None:
    assert api.reserve()["owner"] is None


def test_admin_may_set_owner_on_create(users: dict[str, Api]) -> None:
    resp = users["admin"].create(meta(owner="tenant2"))
    assert resp.status == 201
    assert resp.image["owner"] == "tenant2"
    assert users["admin"].head(resp.image["id"]).meta["owner"] == "tenant2"


def test_admin_owner_empty_means_null(users: dict[str, Api]) -> None:
    resp = users["admin"].create({PREFIX + "owner": ""})
    assert resp.status == 201, resp
    assert resp.image["owner"] is None


def test_non_admin_owner_is_silently_ignored(users: dict[str, Api]) -> None:
    alice = users["alice"]
    resp = alice.create(meta(owner="tenant2"))
    assert resp.status == 201
    assert resp.image["owner"] == "p-alice"
    update = alice.update(resp.image["id"], meta(owner="tenant2"))
    assert update.status == 200
    assert alice.head(resp.image["id"]).meta["owner"] == "p-alice"


def test_admin_may_change_owner(users: dict[str, Api]) -> None:
    image = users["alice"].reserve()
    resp = users["admin"].update(image["id"], meta(owner="tenant2"))
    assert resp.status == 200
    assert resp.image["owner"] == "tenant2"
    resp = users["admin"].update(image["id"], {PREFIX + "owner": ""})
    assert resp.status == 200
    assert resp.image["owner"] is None


def test_non_admin_may_not_create_a_public_image(users: dict[str, Api]) -> None:
    tag = unique()
    resp = users["alice"].create(meta(name=tag, is_public=True))
    assert resp.status == 403, resp
    assert users["admin"].detail(name=tag, is_public="none").images == []


def test_non_admin_may_create_an_explicitly_private_image(users: dict[str, Api]) -> None:
    resp = users["alice"].create(meta(is_public=False))
    assert resp.status == 201
    assert resp.image["is_public"] is False


def test_admin_may_create_a_public_image(users: dict[str, Api]) -> None:
    resp = users["admin"].create(meta(is_public=True))
    assert resp.status == 201
    assert resp.image["is_public"] is True


def test_anonymous_may_not_create(users: dict[str, Api]) -> None:
    assert users["anonymous"].create(meta(name="x")).status == 401


def test_noproject_caller_may_not_create(users: dict[str, Api]) -> None:
    # its image would be ownerless, visible to everyone (#11; docs/protocol.md)
    resp = users["noproject"].create(meta(name="nobody's", owner="p-alice"))
    assert resp.status == 403, resp
    assert "without a project" in resp.text


# -- §9.5 update ------------------------------------------------------------------


def test_put_metadata_on_a_queued_image(api: Api) -> None:
    image = api.reserve(name="before")
    resp = api.update(image["id"], meta(name="after", min_ram=128, protected=False))
    assert resp.status == 200, resp
    assert set(resp.json()) == {"image"}
    assert resp.image["name"] == "after"
    assert resp.image["min_ram"] == 128
    assert resp.image["status"] == "queued"
    assert api.head(image["id"]).meta["name"] == "after"


def test_put_is_public_true_then_false(api: Api) -> None:
    image = api.reserve()
    assert api.update(image["id"], meta(is_public=True)).image["is_public"] is True
    assert api.update(image["id"], meta(is_public=False)).image["is_public"] is False


def test_put_with_data_on_a_queued_image_activates_it(api: Api) -> None:
    image = api.reserve(
        name="upload later", disk_format="raw", container_format="ovf", is_public=True
    )
    resp = api.update(image["id"], {}, DATA)
    assert resp.status == 200, resp
    assert resp.image["status"] == "active"
    assert resp.image["size"] == 5120
    assert resp.image["checksum"] == md5(DATA)
    assert resp.header("etag") == md5(DATA)
    head = api.head(image["id"])
    assert head.meta["status"] == "active"
    assert api.get(image["id"]).body == DATA


def test_put_with_data_on_an_unknown_id_is_404(api: Api) -> None:
    assert api.update(str(uuid.uuid4()), {}, DATA).status == 404


def test_put_on_a_deleted_image_is_403_for_admins(api: Api) -> None:
    image = api.reserve()
    assert api.delete(image["id"]).status == 200
    resp = api.update(image["id"], meta(name="zombie"))
    assert resp.status == 403, resp
    assert api.update(image["id"], {}, DATA).status == 403


@pytest.mark.parametrize("field", ["status", "id"])
def test_put_changing_status_or_id_is_403(api: Api, field: str) -> None:
    image = api.reserve()
    other = {"status": "active", "id": str(uuid.uuid4())}[field]
    assert api.update(image["id"], {PREFIX + field: other}).status == 403
    assert api.update(image["id"], {PREFIX + field: "not-a-uuid-or-status"}).status == 403
    head = api.head(image["id"])
    assert head.meta["status"] == "queued"
    same = api.update(image["id"], {PREFIX + field: image[field]})
    assert same.status == 200, same


def test_status_scenario_28_29(api: Api) -> None:
    image = api.create({"X-Image-Meta-Disk-Format": "raw", "X-Image-Meta-Container-Format": "bare"})
    assert image.status == 201
    image_id = image.image["id"]
    assert api.update(image_id, meta(status="active")).status == 403
    assert api.head(image_id).meta["status"] == "queued"
    assert api.update(image_id, meta(status="queued")).status == 200
    up = api.update(image_id, {}, b"data")
    assert up.status == 200
    assert up.image["status"] == "active"
    assert api.update(image_id, meta(status="queued")).status == 403
    assert api.head(image_id).meta["status"] == "active"
    assert api.update(image_id, meta(status="active")).status == 200


def test_create_status_scenario_30(api: Api) -> None:
    queued = api.create(meta(status="active"))
    assert queued.image["status"] == "queued"
    active = api.create(meta(disk_format="raw", container_format="bare", status="queued"), b"data")
    assert active.status == 201
    assert active.image["status"] == "active"


@pytest.mark.parametrize("field", ["size", "checksum"])
def test_non_admin_may_not_change_size_or_checksum_of_an_active_image(
    users: dict[str, Api], field: str
) -> None:
    alice = users["alice"]
    image = alice.upload(DATA)
    other = {"size": "1", "checksum": "0" * 32}[field]
    resp = alice.update(image["id"], {PREFIX + field: other})
    assert resp.status == 403, resp
    assert alice.head(image["id"]).meta[field] == str(image[field])
    same = alice.update(image["id"], {PREFIX + field: str(image[field])})
    assert same.status == 200, same


def test_admin_may_change_checksum_of_an_active_image(users: dict[str, Api]) -> None:
    image = users["alice"].upload(DATA)
    resp = users["admin"].update(image["id"], meta(checksum="0" * 32))
    assert resp.status == 200, resp
    assert resp.image["checksum"] == "0" * 32


def test_put_data_on_an_active_image_is_409(api: Api) -> None:
    image = api.upload(DATA)
    resp = api.update(image["id"], {}, b"more")
    assert resp.status == 409, resp
    assert api.get(image["id"]).body == DATA


def test_non_admin_may_not_publicize_even_on_an_unknown_id(users: dict[str, Api]) -> None:
    alice = users["alice"]
    image = alice.reserve()
    assert alice.update(image["id"], meta(is_public=True)).status == 403
    assert alice.head(image["id"]).meta["is_public"] == "False"
    assert alice.update(str(uuid.uuid4()), meta(is_public=True)).status == 403


def test_owner_of_a_public_image_may_rename_it_without_publicize(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(owner="p-alice", is_public=True)
    alice = users["alice"]
    renamed = alice.update(image["id"], meta(name="renamed"))
    assert renamed.status == 200, renamed
    assert renamed.image["name"] == "renamed"
    assert alice.update(image["id"], meta(is_public=True)).status == 403
    private = alice.update(image["id"], meta(is_public=False))
    assert private.status == 200
    assert private.image["is_public"] is False


# -- §9.5 property purge table ------------------------------------------------------


def test_purge_default_replaces_properties(api: Api) -> None:
    image = api.reserve(**{})
    api.update(image["id"], props(distro="Ubuntu", arch="x86_64"))
    resp = api.update(image["id"], props(arch="x86_64"))
    assert resp.status == 200
    assert resp.image["properties"] == {"arch": "x86_64"}
    assert _props(api, image["id"]) == {"arch": "x86_64"}


def test_a_name_only_put_wipes_properties(api: Api) -> None:
    image = api.reserve()
    api.update(image["id"], props(a="1"))
    resp = api.update(image["id"], meta(name="renamed"))
    assert resp.image["properties"] == {}


@pytest.mark.parametrize("value", ["true", "1", "T", "on", "y", "YES"])
def test_purge_true_replaces(api: Api, value: str) -> None:
    image = api.reserve()
    api.update(image["id"], props(a="1", b="2"))
    resp = api.update(image["id"], {**props(b="3"), PURGE_PROPS_HEADER: value})
    assert resp.image["properties"] == {"b": "3"}


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "anything"])
def test_purge_false_merges(api: Api, value: str) -> None:
    image = api.reserve()
    api.update(image["id"], props(a="1", b="2"))
    resp = api.update(image["id"], {**props(b="3", c="4"), PURGE_PROPS_HEADER: value})
    assert resp.image["properties"] == {"a": "1", "b": "3", "c": "4"}
    assert _props(api, image["id"]) == {"a": "1", "b": "3", "c": "4"}


def test_upload_never_purges(api: Api) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    api.update(image["id"], props(key1="v1"))
    resp = api.update(image["id"], {**props(key2="v2"), PURGE_PROPS_HEADER: "true"}, b"data")
    assert resp.status == 200, resp
    assert resp.image["properties"] == {"key1": "v1", "key2": "v2"}
    assert api.head(image["id"]).meta["status"] == "active"


def test_purge_scenario_80(api: Api) -> None:
    image = api.upload(b"data", **{})
    api.update(image["id"], {**props(key1="v"), PURGE_PROPS_HEADER: "false"})
    api.update(image["id"], props(key2="v"))
    assert _props(api, image["id"]) == {"key2": "v"}
    api.update(image["id"], {**props(key3="v"), PURGE_PROPS_HEADER: "false"})
    assert _props(api, image["id"]) == {"key2": "v", "key3": "v"}


# -- property quota (§6.4, §9.5), with --property-quota 10 ----------------------------


def _many(count: int, prefix: str = "foo") -> dict[str, str]:
    return props(**{f"{prefix}{i}": str(i) for i in range(count)})


def test_quota_on_create(limited: Api) -> None:
    tag = unique()
    resp = limited.create({**meta(name=tag, is_public=True), **_many(11)})
    assert resp.status == 413, resp
    assert "Attempted: 11, Maximum: 10" in resp.text
    assert limited.detail(name=tag, is_public="none").images == []
    assert limited.create(_many(10)).status == 201


def test_quota_on_update_with_purge_counts_the_request(limited: Api) -> None:
    image = limited.reserve()
    limited.update(image["id"], props(distro="Ubuntu", arch="x86_64"))
    resp = limited.update(image["id"], _many(11))
    assert resp.status == 413, resp
    assert "Attempted: 11, Maximum: 10" in resp.text
    assert _props(limited, image["id"]) == {"distro": "Ubuntu", "arch": "x86_64"}
    assert limited.update(image["id"], _many(10)).status == 200


def test_quota_on_update_without_purge_counts_the_union(limited: Api) -> None:
    image = limited.reserve()
    assert limited.update(image["id"], _many(10)).status == 200
    merge = {PURGE_PROPS_HEADER: "false"}
    resp = limited.update(image["id"], {**props(extra="x"), **merge})
    assert resp.status == 413, resp
    assert "Attempted: 11, Maximum: 10" in resp.text
    # overwriting existing keys does not count again
    assert limited.update(image["id"], {**_many(3), **merge}).status == 200


def test_quota_overwrite_plus_one_new_key_fits(limited: Api) -> None:
    image = limited.reserve()
    assert limited.update(image["id"], _many(9)).status == 200
    merge = {PURGE_PROPS_HEADER: "false"}
    resp = limited.update(image["id"], {**props(foo0="new", extra="x"), **merge})
    assert resp.status == 200, resp
    assert len(resp.image["properties"]) == 10


def test_quota_with_an_upload_counts_the_union(limited: Api) -> None:
    image = limited.reserve(disk_format="raw", container_format="bare")
    assert limited.update(image["id"], _many(10)).status == 200
    resp = limited.update(image["id"], props(extra="x"), b"data")
    assert resp.status == 413, resp
    assert limited.head(image["id"]).meta["status"] == "queued"


# -- §9.6 delete ------------------------------------------------------------------


def test_delete_is_200_with_an_empty_body(api: Api) -> None:
    image = api.upload(DATA, **{})
    resp = api.delete(image["id"])
    assert resp.status == 200, resp
    assert resp.body == b""
    assert resp.header("content-length") in ("0", None)


def test_after_delete(api: Api) -> None:
    image = api.upload(DATA, is_public=True, name=unique())
    api.update(image["id"], {**props(p="v"), PURGE_PROPS_HEADER: "false"})
    assert api.add_member(image["id"], "pattieblack").status == 204
    assert api.delete(image["id"]).status == 200
    head = api.head(image["id"])  # noauth callers are admins: they still see it
    assert head.status == 200
    assert head.meta["status"] == "deleted"
    assert head.meta["deleted"] == "True"
    assert "deleted_at" in head.meta
    assert head.properties == {}
    assert api.get(image["id"]).status == 404
    second = api.delete(image["id"])
    assert second.status == 404
    assert image["id"] in second.text
    assert api.members(image["id"]).status == 404
    assert (
        api.replace_members(
            image["id"], {"memberships": [{"member_id": "x", "can_share": "false"}]}
        ).status
        == 404
    )
    assert api.add_member(image["id"], "chickenpattie").status == 404
    assert api.remove_member(image["id"], "pattieblack").status == 404
    assert api.list(name=image["name"]).images == []


def test_delete_a_protected_image_is_403(api: Api) -> None:
    image = api.upload(DATA, protected=True)
    resp = api.delete(image["id"])
    assert resp.status == 403, resp
    assert api.head(image["id"]).meta["status"] == "active"
    assert api.get(image["id"]).body == DATA
    assert api.update(image["id"], meta(protected=False)).status == 200
    assert api.delete(image["id"]).status == 200


@pytest.mark.parametrize("status", ["queued", "active"])
def test_delete_from_each_status(api: Api, status: str) -> None:
    image = api.reserve() if status == "queued" else api.upload(b"x")
    assert api.delete(image["id"]).status == 200
    assert api.head(image["id"]).meta["status"] == "deleted"


def test_non_admin_deleting_an_ownerless_public_image_is_403(
    users: dict[str, Api],
) -> None:
    image = users["admin"].create(
        meta(owner="", is_public=True, disk_format="raw", container_format="bare"), b"x" * 19
    )
    assert image.status == 201, image
    image_id = image.image["id"]
    assert image.image["owner"] is None
    bob = users["bob"]
    got = bob.get(image_id)
    assert got.status == 200
    assert got.body == b"x" * 19
    assert bob.delete(image_id).status == 403
    assert bob.get(image_id).status == 200


# -- processing order (first failing check wins) ----------------------------------------


def test_create_header_validation_precedes_policy(users: dict[str, Api]) -> None:
    resp = users["alice"].create(meta(is_public=True, min_ram="-1"))
    assert resp.status == 400, resp


def test_create_policy_precedes_property_quota(users: dict[str, Api]) -> None:
    many = props(**{f"p{i}": "v" for i in range(129)})  # default quota is 128
    assert users["alice"].create({**meta(is_public=True), **many}).status == 403
    assert users["alice"].create(many).status == 413


def test_update_policy_precedes_lookup_and_header_checks_precede_policy(
    users: dict[str, Api],
) -> None:
    alice = users["alice"]
    missing = str(uuid.uuid4())
    assert alice.update(missing, meta(is_public=True, min_ram="x")).status == 400
    assert alice.update(missing, meta(is_public=True)).status == 403
    assert alice.update(missing, meta(name="x")).status == 404


def test_update_status_check_precedes_the_upload_conflict(api: Api) -> None:
    image = api.upload(DATA)
    assert api.update(image["id"], meta(status="queued"), b"again").status == 403
    assert api.update(image["id"], {}, b"again").status == 409


def test_put_with_metadata_and_data_applies_both(api: Api) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    resp = api.update(image["id"], meta(name="named-on-upload", min_ram=7), DATA)
    assert resp.status == 200, resp
    assert resp.image["name"] == "named-on-upload"
    assert resp.image["min_ram"] == 7
    assert resp.image["status"] == "active"


def test_put_with_an_unknown_store_is_400(api: Api) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    assert api.update(image["id"], meta(store="bad"), DATA).status == 400
    assert api.head(image["id"]).meta["status"] == "queued"
