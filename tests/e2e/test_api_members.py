"""Spec §9.7 and §17/§18: image members, member quota and shared-images."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.api_client import Api, meta
from tests.e2e.conftest import assert_no_tracebacks
from tests.support.server import start_server

pytestmark = pytest.mark.e2e


def member_list(api: Api, image_id: str) -> list[dict[str, Any]]:
    resp = api.members(image_id)
    assert resp.status == 200, resp
    assert set(resp.json()) == {"members"}
    members: list[dict[str, Any]] = resp.json()["members"]
    return members


# -- add, list, remove (noauth: admin) --------------------------------------------------


def test_add_list_remove_scenario_14_15(api: Api) -> None:
    image = api.reserve()
    first = api.add_member(image["id"], "pattieblack")
    assert first.status == 204, first
    assert first.body == b""
    assert api.add_member(image["id"], "pattiewhite").status == 204
    assert member_list(api, image["id"]) == [
        {"member_id": "pattieblack", "can_share": False},
        {"member_id": "pattiewhite", "can_share": False},
    ]
    removed = api.remove_member(image["id"], "pattieblack")
    assert removed.status == 204
    assert removed.body == b""
    assert member_list(api, image["id"]) == [{"member_id": "pattiewhite", "can_share": False}]


def test_a_fresh_image_has_no_members(api: Api) -> None:
    assert member_list(api, api.reserve()["id"]) == []


@pytest.mark.parametrize(
    ("can_share", "expected"),
    [
        (True, True),
        (False, False),
        ("false", True),
        ("yes", True),
        ("", False),
        (0, False),
        (1, True),
        (None, False),
    ],
)
def test_can_share_uses_truthiness(api: Api, can_share: object, expected: bool) -> None:
    image = api.reserve()
    resp = api.add_member(image["id"], "m", {"member": {"can_share": can_share}})
    assert resp.status == 204, resp
    assert member_list(api, image["id"]) == [{"member_id": "m", "can_share": expected}]


def test_other_body_shapes_are_accepted_and_ignored(api: Api) -> None:
    image = api.reserve()
    resp = api.add_member(image["id"], "flat", {"member_id": "flat", "can_share": True})
    assert resp.status == 204, resp
    assert member_list(api, image["id"]) == [{"member_id": "flat", "can_share": False}]


@pytest.mark.parametrize("body", [b"{not json", b'"a string"', b"5"])
def test_bad_member_bodies_are_400(api: Api, body: bytes) -> None:
    image = api.reserve()
    resp = api.add_member(image["id"], "m", body)
    assert resp.status == 400, resp
    assert member_list(api, image["id"]) == []


def test_existing_member_changes_only_with_a_body(api: Api) -> None:
    image = api.reserve()
    api.add_member(image["id"], "m", {"member": {"can_share": True}})
    assert api.add_member(image["id"], "m").status == 204
    assert member_list(api, image["id"]) == [{"member_id": "m", "can_share": True}]
    api.add_member(image["id"], "m", {"member": {"can_share": False}})
    assert member_list(api, image["id"]) == [{"member_id": "m", "can_share": False}]


def test_removed_member_re_added_with_a_body_is_restored(api: Api) -> None:
    image = api.reserve()
    api.add_member(image["id"], "m")
    api.remove_member(image["id"], "m")
    assert api.add_member(image["id"], "m", {"member": {"can_share": True}}).status == 204
    assert member_list(api, image["id"]) == [{"member_id": "m", "can_share": True}]


def test_replace_members(api: Api) -> None:
    image = api.reserve()
    body = {"memberships": [{"member_id": "a", "can_share": True}, {"member_id": "b"}]}
    resp = api.replace_members(image["id"], body)
    assert resp.status == 204, resp
    assert resp.body == b""
    assert member_list(api, image["id"]) == [
        {"member_id": "a", "can_share": True},
        {"member_id": "b", "can_share": False},
    ]
    body = {"memberships": [{"member_id": "b", "can_share": True}, {"member_id": "c"}]}
    assert api.replace_members(image["id"], body).status == 204
    got = {m["member_id"]: m["can_share"] for m in member_list(api, image["id"])}
    assert got == {"b": True, "c": False}
    # an omitted can_share keeps the previous value
    assert api.replace_members(image["id"], {"memberships": [{"member_id": "b"}]}).status == 204
    assert member_list(api, image["id"]) == [{"member_id": "b", "can_share": True}]
    assert api.replace_members(image["id"], {"memberships": []}).status == 204
    assert member_list(api, image["id"]) == []


@pytest.mark.parametrize(
    "body",
    [
        {"image_memberships": [{"member_id": "a"}]},
        {"memberships": [{"can_share": True}]},
        {"memberships": "a"},
        [{"member_id": "a"}],
        b"{broken",
    ],
)
def test_bad_replace_bodies_are_400_and_change_nothing(api: Api, body: object) -> None:
    image = api.reserve()
    api.add_member(image["id"], "kept")
    resp = api.replace_members(image["id"], body)
    assert resp.status == 400, resp
    assert member_list(api, image["id"]) == [{"member_id": "kept", "can_share": False}]


def test_replace_without_a_body_is_a_4xx(api: Api) -> None:
    # queens: 500 (§19); osimage answers a client error
    image = api.reserve()
    resp = api.request("PUT", f"/v1/images/{image['id']}/members")
    assert 400 <= resp.status < 500, resp


def test_replace_on_an_unknown_image_is_404(api: Api) -> None:
    resp = api.replace_members(str(uuid.uuid4()), {"memberships": []})
    assert resp.status == 404, resp


def test_member_calls_on_an_unknown_image_are_404(api: Api) -> None:
    missing = str(uuid.uuid4())
    assert api.members(missing).status == 404
    assert api.add_member(missing, "m").status == 404
    assert api.remove_member(missing, "m").status == 404


def test_removing_a_non_member_is_404(api: Api) -> None:
    image = api.reserve()
    api.add_member(image["id"], "someone")
    assert api.remove_member(image["id"], "nobody").status == 404
    assert member_list(api, image["id"]) == [{"member_id": "someone", "can_share": False}]


# -- member quota -----------------------------------------------------------------------


def test_member_quota_scenario_16_17(limited: Api) -> None:
    image = limited.reserve()
    eleven = {"memberships": [{"member_id": f"foo{i}"} for i in range(11)]}
    assert limited.replace_members(image["id"], eleven).status == 413
    assert member_list(limited, image["id"]) == []
    ten = {"memberships": [{"member_id": f"foo{i}"} for i in range(10)]}
    assert limited.replace_members(image["id"], ten).status == 204
    assert len(member_list(limited, image["id"])) == 10
    assert limited.add_member(image["id"], "fail_me").status == 413
    # the +1 applies even to an existing member
    assert limited.add_member(image["id"], "foo0", {"member": {"can_share": True}}).status == 413
    assert len(member_list(limited, image["id"])) == 10


def test_replace_over_quota_leaves_the_list_unchanged(limited: Api) -> None:
    image = limited.reserve()
    limited.add_member(image["id"], "old")
    eleven = {"memberships": [{"member_id": f"n{i}"} for i in range(11)]}
    assert limited.replace_members(image["id"], eleven).status == 413
    assert member_list(limited, image["id"]) == [{"member_id": "old", "can_share": False}]


@pytest.fixture(scope="module")
def zero_quota(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    srv = start_server(Path(tmp_path_factory.mktemp("quota0")), "--member-quota", "0")
    yield Api(srv.url)
    assert_no_tracebacks(srv)
    srv.stop()


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    srv = start_server(Path(tmp_path_factory.mktemp("quota-1")), "--member-quota", "-1")
    yield Api(srv.url)
    assert_no_tracebacks(srv)
    srv.stop()


def test_member_quota_zero_refuses_every_member(zero_quota: Api) -> None:
    image = zero_quota.reserve()
    assert zero_quota.add_member(image["id"], "x").status == 413
    assert member_list(zero_quota, image["id"]) == []


def test_negative_member_quota_is_unlimited(unlimited: Api) -> None:
    image = unlimited.reserve()
    assert unlimited.add_member(image["id"], "x").status == 204
    many = {"memberships": [{"member_id": f"m{i}", "can_share": i % 2 == 0} for i in range(150)]}
    assert unlimited.replace_members(image["id"], many).status == 204
    got = member_list(unlimited, image["id"])
    assert got == [{"member_id": f"m{i}", "can_share": i % 2 == 0} for i in range(150)]


# -- who may manage members (tokens) -------------------------------------------------


@pytest.fixture(scope="module")
def shared(users: dict[str, Api]) -> dict[str, Any]:
    """alice's private image shared with carol (can_share) and bob (no can_share)."""
    image = users["alice"].reserve(name="shared-by-alice")
    alice = users["alice"]
    assert alice.add_member(image["id"], "p-carol", {"member": {"can_share": True}}).status == 204
    assert alice.add_member(image["id"], "p-bob", {"member": {"can_share": False}}).status == 204
    return image


def test_owner_sees_every_member(users: dict[str, Api], shared: dict[str, Any]) -> None:
    got = {m["member_id"]: m["can_share"] for m in member_list(users["alice"], shared["id"])}
    assert got == {"p-carol": True, "p-bob": False}


def test_a_member_sees_only_their_own_entry(users: dict[str, Api], shared: dict[str, Any]) -> None:
    assert member_list(users["bob"], shared["id"]) == [{"member_id": "p-bob", "can_share": False}]
    assert member_list(users["carol"], shared["id"]) == [
        {"member_id": "p-carol", "can_share": True}
    ]


def test_members_of_someone_elses_public_image_look_empty(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(owner="p-alice", is_public=True)
    users["alice"].add_member(image["id"], "p-carol")
    assert member_list(users["bob"], image["id"]) == []
    assert len(member_list(users["alice"], image["id"])) == 1


def test_member_with_can_share_may_add_and_remove(users: dict[str, Api]) -> None:
    alice, carol = users["alice"], users["carol"]
    image = alice.reserve()
    alice.add_member(image["id"], "p-carol", {"member": {"can_share": True}})
    assert carol.add_member(image["id"], "p-dave").status == 204
    assert carol.remove_member(image["id"], "p-dave").status == 204
    assert {m["member_id"] for m in member_list(alice, image["id"])} == {"p-carol"}


def test_member_without_can_share_gets_404(users: dict[str, Api], shared: dict[str, Any]) -> None:
    bob = users["bob"]
    assert bob.add_member(shared["id"], "p-dave").status == 404
    assert bob.remove_member(shared["id"], "p-carol").status == 404
    assert bob.replace_members(shared["id"], {"memberships": []}).status == 404
    assert {m["member_id"] for m in member_list(users["alice"], shared["id"])} == {
        "p-carol",
        "p-bob",
    }


def test_non_sharer_on_a_public_image_gets_404(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(owner="p-alice", is_public=True)
    users["alice"].add_member(image["id"], "p-carol")
    bob = users["bob"]
    assert bob.remove_member(image["id"], "p-carol").status == 404
    assert bob.add_member(image["id"], "p-bob").status == 404


def test_admin_may_manage_any_images_members(users: dict[str, Api], shared: dict[str, Any]) -> None:
    admin = users["admin"]
    assert admin.add_member(shared["id"], "p-admin-added").status == 204
    assert admin.remove_member(shared["id"], "p-admin-added").status == 204


def test_projectless_callers_get_401_on_member_changes(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(is_public=True)
    nobody = users["noproject"]
    assert nobody.add_member(image["id"], "x").status == 401
    assert nobody.replace_members(image["id"], {"memberships": []}).status == 401
    assert nobody.remove_member(image["id"], "x").status == 401


# -- shared-images ------------------------------------------------------------------------


def test_shared_images_for_the_member_themselves(
    users: dict[str, Api], shared: dict[str, Any]
) -> None:
    resp = users["carol"].shared_images("p-carol")
    assert resp.status == 200, resp
    assert set(resp.json()) == {"shared_images"}
    entries = resp.json()["shared_images"]
    assert {"image_id": shared["id"], "can_share": True} in entries
    for entry in entries:
        assert set(entry) == {"image_id", "can_share"}
    bob = users["bob"].shared_images("p-bob").json()["shared_images"]
    assert {"image_id": shared["id"], "can_share": False} in bob


def test_shared_images_seen_by_the_owner(users: dict[str, Api], shared: dict[str, Any]) -> None:
    entries = users["alice"].shared_images("p-carol").json()["shared_images"]
    assert {"image_id": shared["id"], "can_share": True} in entries


def test_shared_images_hidden_from_third_parties(
    users: dict[str, Api], shared: dict[str, Any]
) -> None:
    entries = users["bob"].shared_images("p-carol").json()["shared_images"]
    assert shared["id"] not in [e["image_id"] for e in entries]


def test_shared_images_seen_by_admins(users: dict[str, Api], shared: dict[str, Any]) -> None:
    entries = users["admin"].shared_images("p-bob").json()["shared_images"]
    assert {"image_id": shared["id"], "can_share": False} in entries


def test_shared_images_of_an_unknown_member_is_empty(users: dict[str, Api]) -> None:
    resp = users["alice"].shared_images(f"p-{uuid.uuid4().hex}")
    assert resp.json() == {"shared_images": []}


def test_shared_images_drops_removed_and_deleted(users: dict[str, Api]) -> None:
    alice = users["alice"]
    removed = alice.reserve()
    deleted = alice.reserve()
    for image in (removed, deleted):
        alice.add_member(image["id"], "p-carol")
    alice.remove_member(removed["id"], "p-carol")
    assert alice.delete(deleted["id"]).status == 200
    ids = [e["image_id"] for e in users["carol"].shared_images("p-carol").json()["shared_images"]]
    assert removed["id"] not in ids
    assert deleted["id"] not in ids


def test_shared_images_in_noauth(api: Api) -> None:
    image = api.reserve()
    member = f"m-{uuid.uuid4().hex}"
    api.add_member(image["id"], member, {"member": {"can_share": True}})
    assert api.shared_images(member).json() == {
        "shared_images": [{"image_id": image["id"], "can_share": True}]
    }
    assert api.request("POST", f"/v1/shared-images/{member}").status == 200


def test_member_added_by_name_sees_the_image(users: dict[str, Api]) -> None:
    image = users["alice"].create(meta(name="visible-to-bob"))
    assert users["bob"].head(image.image["id"]).status == 404
    users["alice"].add_member(image.image["id"], "p-bob")
    assert users["bob"].head(image.image["id"]).status == 200
    users["alice"].remove_member(image.image["id"], "p-bob")
    assert users["bob"].head(image.image["id"]).status == 404


def test_a_member_cannot_grant_themselves_can_share(
    users: dict[str, Api], shared: dict[str, Any]
) -> None:
    bob = users["bob"]
    resp = bob.add_member(shared["id"], "p-bob", {"member": {"can_share": True}})
    assert resp.status == 404, resp
    assert member_list(bob, shared["id"]) == [{"member_id": "p-bob", "can_share": False}]


def test_a_stranger_cannot_join_a_private_image(users: dict[str, Api]) -> None:
    image = users["alice"].reserve()
    bob = users["bob"]
    assert bob.add_member(image["id"], "p-bob").status == 404
    assert bob.replace_members(image["id"], {"memberships": [{"member_id": "p-bob"}]}).status == 404
    assert bob.head(image["id"]).status == 404
    assert member_list(users["alice"], image["id"]) == []
