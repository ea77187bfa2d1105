"""Image API v2 (spec v2 §4-§8): create, show, PATCH, delete, deactivate, tags, over a real
tokens server; every answer is also checked against the server's own image schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tests.e2e.api_client import Api, unique
from tests.e2e.v2_client import PATCH_20, V2
from tests.support.server import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _no_tracebacks(tokens_server: Server) -> Iterator[None]:
    offset = len(tokens_server.log())
    yield
    new = tokens_server.log()[offset:]
    assert "Traceback" not in new, new[-3000:]


@pytest.fixture(scope="module")
def v2(users: dict[str, Api]) -> dict[str, V2]:
    return {name: V2(api) for name, api in users.items()}


@pytest.fixture(scope="module")
def image_schema(v2: dict[str, V2]) -> dict[str, Any]:
    resp = v2["alice"].call("GET", "schemas/image")
    assert resp.status == 200, resp
    schema: dict[str, Any] = resp.json()
    return schema


def conforms(schema: dict[str, Any], image: dict[str, Any]) -> None:
    """What python-glanceclient does with every image it reads."""
    jsonschema.validate(image, schema)


# -- create -----------------------------------------------------------------------------------


def test_create_answers_201_with_the_queued_record(v2: dict[str, V2], image_schema: Any) -> None:
    name = unique("v2c")
    resp = v2["alice"].call(
        "POST",
        "images",
        {
            "name": name,
            "disk_format": "qcow2",
            "container_format": "bare",
            "os_distro": "ubuntu",
            "trait:STORAGE_DISK_SSD": "required",
            "tags": ["a", "a", "b"],
        },
    )
    assert resp.status == 201, resp
    image = resp.json()
    conforms(image_schema, image)
    assert (
        resp.header("location")
        == f"http://{v2['alice'].api.host}:{v2['alice'].api.port}/v2/images/{image['id']}"
    )
    assert resp.header("openstack-image-import-methods") == "glance-direct,web-download"
    assert (image["status"], image["visibility"], image["owner"]) == ("queued", "shared", "p-alice")
    assert (image["size"], image["checksum"], image["os_hash_value"]) == (None, None, None)
    assert sorted(image["tags"]) == ["a", "b"]
    assert image["os_distro"] == "ubuntu"
    assert image["trait:STORAGE_DISK_SSD"] == "required"
    assert image["created_at"].endswith("Z")
    assert len(image["created_at"]) == 20
    assert image["self"] == f"/v2/images/{image['id']}"
    assert v2["alice"].show(image["id"]).json() == image


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"self": "/x"}, 403),
        ({"checksum": "0" * 32}, 403),
        ({"status": "active"}, 403),
        ({"deleted": True}, 403),
        ({"locations": []}, 403),
        ({"os_glance_foo": "bar"}, 403),
        ({"disk_format": "floppy"}, 400),
        ({"min_ram": -1}, 400),
        ({"min_disk": 2147483648}, 400),
        ({"protected": "yes"}, 400),
        ({"custom": 5}, 400),
        ({"x" * 256: "v"}, 400),
        ({"id": "not-a-uuid"}, 400),
        ({"owner": "p-bob"}, 403),
        ({"visibility": "public"}, 403),
        ({"visibility": "everyone"}, 400),
        ({"tags": ["t" * 256]}, 400),
    ],
)
def test_create_refusals(v2: dict[str, V2], body: dict[str, Any], status: int) -> None:
    name = unique("v2bad")
    resp = v2["alice"].call("POST", "images", {"name": name, **body})
    assert resp.status == status, resp
    assert name not in [i["name"] for i in v2["alice"].list(f"name={name}").json()["images"]]


def test_create_body_rules(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    assert alice.call("POST", "images", headers={"Content-Length": "0"}).status == 400
    assert alice.call("POST", "images", ["x"]).status == 400
    bad = alice.api.request("POST", "/v2/images", {"Content-Type": "application/json"}, b"{x")
    assert bad.status == 400
    assert "Malformed JSON" in bad.text


def test_create_with_an_id_twice_is_409_even_after_delete(v2: dict[str, V2]) -> None:
    image_id = str(uuid.uuid4())
    made = v2["alice"].create(id=image_id)
    assert made["id"] == image_id
    assert v2["alice"].call("DELETE", f"images/{image_id}").status == 204
    assert v2["alice"].call("POST", "images", {"id": image_id}).status == 409


def test_admin_may_create_public_images_for_another_owner(v2: dict[str, V2]) -> None:
    image = v2["admin"].create(visibility="public", owner="p-bob")
    assert (image["visibility"], image["owner"]) == ("public", "p-bob")
    assert v2["carol"].show(image["id"]).status == 200
    v1 = v2["carol"].api.head(image["id"])
    assert v1.meta["is_public"] == "True"  # one record: v1 sees is_public


def test_community_create_is_allowed_and_readable_by_all(v2: dict[str, V2]) -> None:
    image = v2["alice"].create(visibility="community")
    assert v2["bob"].show(image["id"]).status == 200
    assert image["id"] not in v2["bob"].ids()  # not in the default list
    assert image["id"] in v2["bob"].ids("visibility=community")


# -- show -------------------------------------------------------------------------------------


def test_show_hides_what_the_caller_cannot_read(v2: dict[str, V2]) -> None:
    private = v2["alice"].create(visibility="private")
    shared = v2["alice"].create()
    for who in ("bob", "noproject"):
        assert v2[who].show(private["id"]).status == 404
        assert v2[who].show(shared["id"]).status == 404
    assert v2["admin"].show(private["id"]).status == 200
    assert v2["alice"].show(str(uuid.uuid4())).status == 404
    assert v2["alice"].call("GET", "images/").status == 404
    assert v2["alice"].show("x" * 37).status == 404


def test_show_with_a_body_is_400(v2: dict[str, V2]) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].call(
        "GET", f"images/{image['id']}", headers={"Content-Length": "2"}, data=b"{}"
    )
    assert resp.status == 400
    assert "not expected" in resp.text


def test_unknown_methods_and_paths(v2: dict[str, V2]) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].call("HEAD", f"images/{image['id']}")
    assert resp.status == 405
    assert resp.header("allow") == "GET, PATCH, DELETE"
    assert v2["alice"].call("PUT", "images").header("allow") == "GET, POST"
    assert v2["alice"].call("GET", "nothing/here").status == 404


def test_anonymous_gets_401(v2: dict[str, V2]) -> None:
    assert v2["anonymous"].list().status == 401


# -- PATCH ------------------------------------------------------------------------------------


def test_patch_v21_add_replace_remove(v2: dict[str, V2], image_schema: Any) -> None:
    alice = v2["alice"]
    image = alice.create(keep="k", drop="d", change="c")
    ops = [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/min_ram", "value": 512},
        {"op": "add", "path": "/new", "value": "n"},
        {"op": "add", "path": "/change", "value": "c2"},  # v2.1 add overwrites
        {"op": "remove", "path": "/drop"},
        {"op": "replace", "path": "/tags", "value": ["x", "y", "x"]},
        {"op": "add", "path": "/a~1b", "value": "slash"},
    ]
    resp = alice.patch(image["id"], ops)
    assert resp.status == 200, resp
    got = alice.show(image["id"]).json()
    conforms(image_schema, got)
    assert (got["name"], got["min_ram"]) == ("renamed", 512)
    assert (got["keep"], got["new"], got["change"], got["a/b"]) == ("k", "n", "c2", "slash")
    assert "drop" not in got
    assert sorted(got["tags"]) == ["x", "y"]
    v1 = alice.api.head(image["id"])  # the same record through v1
    assert v1.meta["name"] == "renamed"
    assert v1.properties["new"] == "n"
    assert "drop" not in v1.properties


def test_patch_v20_media_type(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.create(present="p")
    resp = alice.patch(image["id"], [{"replace": "/name", "value": "old-style"}], PATCH_20)
    assert resp.status == 200, resp
    assert resp.json()["name"] == "old-style"
    assert alice.patch(image["id"], [{"add": "/present", "value": "x"}], PATCH_20).status == 409
    assert alice.patch(image["id"], [{"add": "/name", "value": "x"}], PATCH_20).status == 409
    assert alice.patch(image["id"], [{"add": "/fresh", "value": "x"}], PATCH_20).status == 200
    two = [{"add": "/a", "replace": "/b", "value": "x"}]
    assert alice.patch(image["id"], two, PATCH_20).status == 400
    assert (
        alice.patch(image["id"], [{"add": "/os_glance_foo", "value": "x"}], PATCH_20).status == 403
    )


@pytest.mark.parametrize("media", ["application/json", "application/json-patch+json", ""])
def test_patch_other_media_types_are_415(v2: dict[str, V2], media: str) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].patch(image["id"], [], media)
    assert resp.status == 415, resp
    assert resp.header("accept-patch") == (
        "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"
    )


@pytest.mark.parametrize(
    ("ops", "status", "text"),
    [
        ({"op": "add"}, 400, "JSON array"),
        (["x"], 400, "must be JSON objects"),
        ([{"path": "/name", "value": "x"}], 400, "Unable to find `op`"),
        ([{"op": "move", "path": "/name"}], 400, "Invalid operation: `move`"),
        ([{"op": "add", "value": "x"}], 400, "Unable to find 'path'"),
        ([{"op": "add", "path": "name", "value": "x"}], 400, 'does not start with "/"'),
        ([{"op": "add", "path": "/foo/bar", "value": "x"}], 400, "Invalid JSON pointer"),
        ([{"op": "add", "path": "/tags/-", "value": "x"}], 400, "Invalid JSON pointer"),
        ([{"op": "add", "path": "/name"}], 400, 'requires a member named "value"'),
        ([{"op": "replace", "path": "/min_ram", "value": -5}], 400, "negative"),
        ([{"op": "add", "path": "/custom", "value": 3}], 400, "does not match schema"),
        ([{"op": "remove", "path": "/name"}], 403, "may not be removed"),
        ([{"op": "replace", "path": "/status", "value": "active"}], 403, "read-only"),
        ([{"op": "add", "path": "/deleted", "value": True}], 403, "reserved"),
        ([{"op": "replace", "path": "/owner", "value": "p-bob"}], 403, "non admin"),
        ([{"op": "add", "path": "/owner", "value": "p-bob"}], 403, "non admin"),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], 403, "public"),
        ([{"op": "replace", "path": "/missing", "value": "x"}], 409, "does not exist"),
        ([{"op": "remove", "path": "/missing"}], 409, "does not exist"),
        ([{"op": "add", "path": "/locations/-", "value": {}}], 403, "locations"),
    ],
)
def test_patch_errors_store_nothing(v2: dict[str, V2], ops: Any, status: int, text: str) -> None:
    alice = v2["alice"]
    image = alice.create(name="before")
    # a valid first operation proves the whole request is rejected, not just the bad part
    body = (
        ops
        if not isinstance(ops, list)
        else [{"op": "replace", "path": "/name", "value": "after"}, *ops]
    )
    resp = alice.patch(image["id"], body)
    assert resp.status == status, resp
    assert text in resp.text, resp.text
    after = alice.show(image["id"]).json()
    assert after["name"] == "before"
    assert after["updated_at"] == image["updated_at"]


def test_patch_empty_list_changes_nothing(v2: dict[str, V2]) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].patch(image["id"], [])
    assert resp.status == 200
    assert resp.json() == image


def test_patch_formats_only_while_queued(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.active(b"formats")
    resp = alice.patch(image["id"], [{"op": "replace", "path": "/disk_format", "value": "qcow2"}])
    assert resp.status == 403
    assert "queued" in resp.text
    queued = alice.create()
    ok = alice.patch(queued["id"], [{"op": "replace", "path": "/disk_format", "value": "qcow2"}])
    assert ok.status == 200
    assert ok.json()["disk_format"] == "qcow2"


def test_patch_by_others(v2: dict[str, V2]) -> None:
    public = v2["admin"].create(visibility="public")
    ops = [{"op": "replace", "path": "/name", "value": "mine"}]
    assert v2["bob"].patch(public["id"], ops).status == 403  # readable, not writable
    private = v2["alice"].create(visibility="private")
    assert v2["bob"].patch(private["id"], ops).status == 404
    assert (
        v2["admin"]
        .patch(private["id"], [{"op": "replace", "path": "/owner", "value": "p-carol"}])
        .status
        == 200
    )
    assert v2["carol"].show(private["id"]).status == 200


def test_patch_visibility_syncs_v1_is_public(v2: dict[str, V2]) -> None:
    image = v2["admin"].create(visibility="private")
    v2["admin"].patch(image["id"], [{"op": "replace", "path": "/visibility", "value": "public"}])
    assert v2["admin"].api.head(image["id"]).meta["is_public"] == "True"
    assert v2["bob"].show(image["id"]).status == 200
    v2["admin"].patch(image["id"], [{"op": "replace", "path": "/visibility", "value": "community"}])
    assert v2["admin"].api.head(image["id"]).meta["is_public"] == "False"


def test_patch_property_quota(v2: dict[str, V2], limits_v2: V2) -> None:
    image = limits_v2.create(**{f"p{i}": "v" for i in range(10)})
    resp = limits_v2.patch(image["id"], [{"op": "add", "path": "/p10", "value": "v"}])
    assert resp.status == 413, resp
    replace = limits_v2.patch(image["id"], [{"op": "replace", "path": "/p0", "value": "w"}])
    assert replace.status == 200


@pytest.fixture(scope="module")
def limits_v2(limited: Api) -> V2:
    return V2(limited)


# -- delete, deactivate -----------------------------------------------------------------------


def test_delete_is_204_then_404(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.active(b"delete me")
    assert alice.call("DELETE", f"images/{image['id']}").status == 204
    assert alice.show(image["id"]).status == 404
    resp = alice.call("DELETE", f"images/{image['id']}")
    assert resp.status == 404
    assert "Failed to find image" in resp.text
    assert image["id"] not in alice.ids()


def test_delete_refusals(v2: dict[str, V2]) -> None:
    image = v2["alice"].create(protected=True)
    resp = v2["alice"].call("DELETE", f"images/{image['id']}")
    assert resp.status == 403
    assert "protected" in resp.text
    public = v2["admin"].create(visibility="public")
    assert v2["bob"].call("DELETE", f"images/{public['id']}").status == 403
    assert v2["bob"].call("DELETE", f"images/{image['id']}").status == 404
    assert v2["alice"].show(image["id"]).status == 200


def test_deactivate_and_reactivate(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.active(b"deactivate me", visibility="community")
    action = f"images/{image['id']}/actions/"
    assert alice.call("POST", action + "deactivate").status == 204
    assert alice.call("POST", action + "deactivate").status == 204  # no-op
    assert alice.show(image["id"]).json()["status"] == "deactivated"
    assert alice.download(image["id"]).status == 403
    assert v2["admin"].download(image["id"]).body == b"deactivate me"  # admins still read
    assert v2["bob"].call("POST", action + "reactivate").status == 403
    assert alice.call("POST", action + "reactivate").status == 204
    assert alice.download(image["id"]).body == b"deactivate me"
    queued = alice.create()
    resp = alice.call("POST", f"images/{queued['id']}/actions/deactivate")
    assert resp.status == 403
    assert "status 'queued'" in resp.text
    assert alice.call("GET", action + "deactivate").status == 405


# -- tags -------------------------------------------------------------------------------------


def test_tags(v2: dict[str, V2]) -> None:
    alice = v2["alice"]
    image = alice.create(tags=["one"])
    assert alice.call("PUT", f"images/{image['id']}/tags/two").status == 204
    assert alice.call("PUT", f"images/{image['id']}/tags/two").status == 204
    assert alice.call("PUT", f"images/{image['id']}/tags/gabe%40example.com").status == 204
    got = alice.show(image["id"]).json()
    assert sorted(got["tags"]) == ["gabe@example.com", "one", "two"]
    assert got["updated_at"] >= image["updated_at"]
    assert alice.call("DELETE", f"images/{image['id']}/tags/one").status == 204
    assert alice.call("DELETE", f"images/{image['id']}/tags/one").status == 404
    assert image["id"] in alice.ids("tag=two&tag=gabe@example.com")
    assert image["id"] not in alice.ids("tag=two&tag=one")
    assert alice.call("PUT", f"images/{uuid.uuid4()}/tags/x").status == 404
    public = v2["admin"].create(visibility="public")
    assert v2["bob"].call("PUT", f"images/{public['id']}/tags/x").status == 403
    assert not any(
        "tag" in name for name in alice.api.head(image["id"]).header_names()
    )  # v1: no tags


# -- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image", "images", "member", "members"])
def test_schemas(v2: dict[str, V2], name: str) -> None:
    resp = v2["alice"].call("GET", f"schemas/{name}")
    assert resp.status == 200
    schema = resp.json()
    assert schema["name"] == name
    jsonschema.Draft4Validator.check_schema(schema)
    assert v2["alice"].call("POST", f"schemas/{name}").status == 405


def test_image_schema_shape(image_schema: dict[str, Any]) -> None:
    props = image_schema["properties"]
    assert image_schema["additionalProperties"] == {"type": "string"}
    assert set(props["visibility"]["enum"]) == {"public", "private", "shared", "community"}
    assert "qcow2" in props["disk_format"]["enum"]
    assert None in props["disk_format"]["enum"]
    assert props["os_distro"]["is_base"] is False
    assert "is_base" not in props["name"]
