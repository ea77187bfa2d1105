"""The tenant-isolation matrix (data in isolation_matrix.py), driven over a real tokens server.

Read-only operations share one set of images; every mutating cell builds its own, and
after a refused change checks (as admin) that nothing changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.api_client import Api, meta, unique
from tests.e2e.conftest import assert_no_tracebacks
from tests.e2e.isolation_matrix import ACTORS, EXPECTED, KINDS, OPERATIONS
from tests.support.server import TOKENS, start_server

pytestmark = pytest.mark.e2e

IDENTITIES = {
    **TOKENS,
    "dave-token": {"user_id": "u-dave", "project_id": "p-dave", "roles": ["member"]},
}
ACTOR_TOKENS = {
    "admin": "admin-token",
    "owner": "alice-token",
    "sharer": "carol-token",
    "member": "dave-token",
    "other": "bob-token",
    "noproject": "noproject-token",
}
DATA = b"isolation data"
READ_ONLY = {"HEAD", "GET", "LIST", "LIST-ALL", "GET-MEMBERS", "SHARED"}


class World:
    """Clients per actor, and a builder for images of each kind."""

    def __init__(self, url: str) -> None:
        self.as_ = {actor: Api(url, token) for actor, token in ACTOR_TOKENS.items()}
        self.admin = self.as_["admin"]

    def build(self, kind: str, *, data: bool = True) -> dict[str, Any]:
        name = unique(kind)
        fields: dict[str, object] = {"name": name, "disk_format": "raw", "container_format": "bare"}
        if kind == "private":
            maker = self.as_["owner"]
        elif kind == "public":
            maker, fields = self.admin, {**fields, "owner": "p-alice", "is_public": True}
        else:
            maker, fields = self.admin, {**fields, "owner": ""}
        resp = maker.create(meta(**fields), DATA if data else None)
        assert resp.status == 201, resp
        image = resp.image
        expected_owner = None if kind == "ownerless" else "p-alice"
        assert image["owner"] == expected_owner, image
        for member, can_share in (("p-carol", True), ("p-dave", False), ("p-extra", False)):
            body = {"member": {"can_share": can_share}}
            added = self.admin.add_member(image["id"], member, body)
            assert added.status == 204, added
        return image


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("isolation")
    tokens = base / "identities.json"
    tokens.write_text(json.dumps(IDENTITIES))
    srv = start_server(base, "--auth", "tokens", "--tokens-file", str(tokens))
    yield World(srv.url)
    assert_no_tracebacks(srv)
    srv.stop()


@pytest.fixture(scope="module")
def shared_images(world: World) -> dict[str, dict[str, Any]]:
    return {kind: world.build(kind) for kind in KINDS}


def _member_ids(world: World, image_id: str) -> set[str]:
    resp = world.admin.members(image_id)
    assert resp.status == 200, resp
    return {m["member_id"] for m in resp.json()["members"]}


def _attempt(world: World, operation: str, kind: str, actor: str, image: dict[str, Any]) -> object:
    api = world.as_[actor]
    image_id = image["id"]
    if operation == "HEAD":
        return api.head(image_id).status
    if operation == "GET":
        resp = api.get(image_id)
        if resp.status == 200:
            assert resp.body == DATA
        return resp.status
    if operation in ("LIST", "LIST-ALL"):
        params = {"name": image["name"]}
        if operation == "LIST-ALL":
            params["is_public"] = "none"
        resp = api.detail(**params)
        assert resp.status == 200, resp
        return "yes" if image_id in [i["id"] for i in resp.images] else "no"
    if operation == "GET-MEMBERS":
        resp = api.members(image_id)
        if resp.status == 200:
            seen = {m["member_id"] for m in resp.json()["members"]}
            if actor not in ("admin", "owner") or (kind == "ownerless" and actor == "owner"):
                # a non-owner sees at most their own entry
                own = {"sharer": "p-carol", "member": "p-dave"}.get(actor)
                assert seen <= {own}, (actor, seen)
        return resp.status
    if operation == "SHARED":
        resp = api.shared_images("p-carol")
        assert resp.status == 200, resp
        ids = [e["image_id"] for e in resp.json()["shared_images"]]
        return "yes" if image_id in ids else "no"
    if operation == "PUT-META":
        resp = api.update(image_id, meta(name=f"changed-by-{actor}"))
        after = world.admin.head(image_id).meta["name"]
        assert (after == f"changed-by-{actor}") == (resp.status == 200), (resp, after)
        return resp.status
    if operation == "PUT-DATA":
        resp = api.update(image_id, {}, DATA)
        after = world.admin.head(image_id).meta["status"]
        assert (after == "active") == (resp.status == 200), (resp, after)
        return resp.status
    if operation == "DELETE":
        resp = api.delete(image_id)
        after = world.admin.head(image_id).meta["status"]
        assert (after == "deleted") == (resp.status == 200), (resp, after)
        if resp.status != 200:
            assert world.admin.get(image_id).body == DATA
        return resp.status
    if operation == "PUT-MEMBER":
        resp = api.add_member(image_id, "p-zed")
        assert ("p-zed" in _member_ids(world, image_id)) == (resp.status == 204), resp
        return resp.status
    if operation == "DELETE-MEMBER":
        resp = api.remove_member(image_id, "p-extra")
        assert ("p-extra" not in _member_ids(world, image_id)) == (resp.status == 204), resp
        return resp.status
    raise AssertionError(f"unknown operation {operation}")


CELLS = [
    pytest.param(op, kind, actor, id=f"{op}-{kind}-{actor}")
    for op in OPERATIONS
    for kind in KINDS
    for actor in ACTORS
]


@pytest.mark.parametrize(("operation", "kind", "actor"), CELLS)
def test_isolation(
    world: World, shared_images: dict[str, dict[str, Any]], operation: str, kind: str, actor: str
) -> None:
    if operation in READ_ONLY:
        image = shared_images[kind]
    else:
        image = world.build(kind, data=operation != "PUT-DATA")
    got = _attempt(world, operation, kind, actor, image)
    assert got == EXPECTED[(operation, kind, actor)]


def test_the_matrix_is_complete() -> None:
    assert len(EXPECTED) == len(OPERATIONS) * len(KINDS) * len(ACTORS)
    assert len(OPERATIONS) == 11
