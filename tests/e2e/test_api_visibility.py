"""Spec §10: visibility of single images and of lists, incl. the legacy list matrix (§10.2)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.api_client import Api, meta
from tests.e2e.conftest import assert_no_tracebacks
from tests.support.server import TOKENS, start_server

pytestmark = pytest.mark.e2e

IDENTITIES = {
    **TOKENS,
    "rootless-admin-token": {"user_id": "u-root", "project_id": None, "roles": ["admin"]},
    "norole-token": {"user_id": "u-alice2", "project_id": "p-alice", "roles": []},
    "norole-noproject-token": {"user_id": "u-x", "project_id": None, "roles": []},
    "shouty-admin-token": {"user_id": "u-s", "project_id": "p-shout", "roles": ["ADMIN"]},
}

# §10.2 legacy matrix: (token, is_public query or None) -> count of the 8 images.
LEGACY = [
    ("norole-token", None, 5),  # tenant1, no role: 4 public + own private
    ("alice-token", None, 5),
    ("norole-noproject-token", None, 4),  # public only
    ("noproject-token", None, 4),
    ("rootless-admin-token", None, 4),
    ("rootless-admin-token", "none", 8),
    ("rootless-admin-token", "true", 4),
    ("rootless-admin-token", "false", 4),
    ("admin-token", None, 5),
    ("admin-token", "none", 8),
    ("admin-token", "NONE", 8),
    ("admin-token", "true", 5),
    ("admin-token", "1", 5),
    ("admin-token", "false", 4),
    ("admin-token", "0", 4),
    ("shouty-admin-token", "none", 8),  # the admin role is compared lower-cased (§1.2)
    # non-admins: is_public is ignored whatever its value (§10.2, §18 94)
    ("alice-token", "false", 5),
    ("alice-token", "none", 5),
    ("alice-token", "true", 5),
    ("noproject-token", "none", 4),
]


@pytest.fixture(scope="module", params=["none-string", "no-owner"])
def legacy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh tokens server holding the 8 images: owners p-admin, p-alice, p-bob and a
    fourth that is either the literal string "none" (as in the legacy test) or no owner."""
    base = tmp_path_factory.mktemp(f"legacy-{request.param}")
    tokens = base / "identities.json"
    tokens.write_text(json.dumps(IDENTITIES))
    srv = start_server(base, "--auth", "tokens", "--tokens-file", str(tokens))
    admin = Api(srv.url, "admin-token")
    fourth = "none" if request.param == "none-string" else ""
    for owner in ("p-admin", "p-alice", "p-bob", fourth):
        for public in (True, False):
            resp = admin.create(meta(owner=owner, is_public=public, name=f"{owner}-{public}"))
            assert resp.status == 201, resp
    yield srv.url
    assert_no_tracebacks(srv)
    srv.stop()


@pytest.mark.parametrize(("token", "is_public", "count"), LEGACY)
def test_legacy_list_matrix(legacy: str, token: str, is_public: str | None, count: int) -> None:
    api = Api(legacy, token)
    params = {} if is_public is None else {"is_public": is_public}
    resp = api.detail(**params)
    assert resp.status == 200, resp
    assert len(resp.images) == count, [(i["owner"], i["is_public"]) for i in resp.images]
    summary = api.list(**params)
    assert len(summary.images) == count


def test_admin_is_public_false_lists_every_private_image(legacy: str) -> None:
    images = Api(legacy, "admin-token").detail(is_public="false").images
    assert all(i["is_public"] is False for i in images)
    assert {i["owner"] for i in images} >= {"p-admin", "p-alice", "p-bob"}


def test_own_private_and_public_are_what_a_tenant_lists(legacy: str) -> None:
    images = Api(legacy, "bob-token").detail().images
    assert sorted((i["owner"] or "", i["is_public"]) for i in images if not i["is_public"]) == [
        ("p-bob", False)
    ]


# -- §10.1 single images ----------------------------------------------------------


def test_other_tenants_private_image_is_404_never_403(users: dict[str, Api]) -> None:
    image = users["alice"].upload(b"secret")
    bob = users["bob"]
    for resp in (
        bob.head(image["id"]),
        bob.get(image["id"]),
        bob.members(image["id"]),
        bob.update(image["id"], meta(name="x")),
        bob.delete(image["id"]),
    ):
        assert resp.status == 404, resp
        assert b"secret" not in resp.body
    assert users["alice"].get(image["id"]).body == b"secret"


def test_a_non_admin_cannot_see_a_deleted_image(users: dict[str, Api]) -> None:
    alice = users["alice"]
    image = alice.reserve()
    assert alice.delete(image["id"]).status == 200
    assert alice.head(image["id"]).status == 404
    assert alice.update(image["id"], meta(name="x")).status == 404
    assert alice.delete(image["id"]).status == 404
    assert alice.members(image["id"]).status == 404
    admin = users["admin"].head(image["id"])
    assert admin.status == 200
    assert admin.meta["status"] == "deleted"
    assert admin.meta["deleted"] == "True"


def test_deleted_members_images_answer_404_to_admins(users: dict[str, Api]) -> None:
    image = users["alice"].reserve()
    users["alice"].delete(image["id"])
    resp = users["admin"].members(image["id"])
    assert resp.status == 404, resp
    assert image["id"] in resp.text


def test_shared_images_are_listed_for_members(users: dict[str, Api]) -> None:
    image = users["alice"].reserve(name="for-carol")
    users["alice"].add_member(image["id"], "p-carol")
    assert image["id"] in users["carol"].detail_ids(name="for-carol")
    assert image["id"] not in users["bob"].detail_ids(name="for-carol")
    assert image["id"] not in users["noproject"].detail_ids(name="for-carol")


def test_changes_since_does_not_widen_visibility(users: dict[str, Api]) -> None:
    image = users["alice"].reserve(name="still-private")
    users["alice"].delete(image["id"])
    live = users["alice"].reserve(name="still-private")
    since = {"changes-since": "2000-01-01", "name": "still-private"}
    assert users["bob"].detail_ids(**since) == []
    assert users["noproject"].detail_ids(**since) == []
    assert live["id"] in users["alice"].detail_ids(**since)


def test_anonymous_callers_get_401_everywhere(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(is_public=True)
    anon = users["anonymous"]
    for resp in (
        anon.head(image["id"]),
        anon.get(image["id"]),
        anon.list(),
        anon.detail(),
        anon.update(image["id"], meta(name="x")),
        anon.delete(image["id"]),
        anon.members(image["id"]),
        anon.add_member(image["id"], "x"),
    ):
        assert resp.status == 401, resp
