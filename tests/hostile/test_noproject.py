"""Callers without a project (#11 item 9): a non-admin token without a project creates
nothing, since what it created would be ownerless and visible to everyone.

Images: 403 with a message (nothing is created, data or not). Memberships: 401, as the
spec has it (§9.7). Admins without a project still create ownerless images (the spec's
unauthenticated flavour). Runs a real `osimage serve` with token identities.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.api_client import Api, meta, props, unique
from tests.support.server import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("noproject"), auth="tokens")
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def users(server: Server) -> dict[str, Api]:
    names = ("admin", "alice", "noproject")
    return {name: Api(server.url, f"{name}-token") for name in names}


def _all_names(admin: Api) -> list[str]:
    resp = admin.request("GET", "/v1/images/detail?is_public=none&limit=1000")
    assert resp.status == 200, resp
    return [entry["name"] for entry in resp.images]


@pytest.mark.parametrize("data", [None, b"x" * 1000], ids=["reserve", "upload"])
def test_a_projectless_caller_cannot_create_images(
    users: dict[str, Api], data: bytes | None
) -> None:
    name = unique("nobody")
    headers = {
        **meta(name=name, disk_format="raw", container_format="bare"),
        **props(colour="red"),
    }
    resp = users["noproject"].create(headers, data)
    assert resp.status == 403, resp
    assert "without a project" in resp.text
    assert name not in _all_names(users["admin"])


def test_a_projectless_caller_cannot_make_an_image_with_an_owner_either(
    users: dict[str, Api],
) -> None:
    resp = users["noproject"].create(meta(name=unique("nobody"), owner="p-alice"))
    assert resp.status == 403, resp


def test_a_projectless_caller_cannot_share(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(name=unique("public"), is_public=True)
    nobody = users["noproject"]
    for resp in (
        nobody.add_member(image["id"], "p-nobody"),
        nobody.replace_members(image["id"], {"memberships": [{"member_id": "p-nobody"}]}),
    ):
        assert resp.status == 401, resp
        assert "No authenticated user" in resp.text
    assert users["admin"].members(image["id"]).json()["members"] == []


def test_a_projectless_caller_still_reads_public_images(users: dict[str, Api]) -> None:
    image = users["admin"].reserve(name=unique("public"), is_public=True)
    nobody = users["noproject"]
    assert nobody.head(image["id"]).status == 200
    assert image["id"] in nobody.detail_ids()


def test_callers_with_a_project_and_admins_still_create(users: dict[str, Api]) -> None:
    assert users["alice"].reserve(name=unique("alice"))["owner"] == "p-alice"
    assert users["admin"].reserve(name=unique("admin"))["owner"] == "p-admin"


def test_an_admin_without_a_project_creates_ownerless_images(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv = start_server(tmp_path_factory.mktemp("noauth"))  # noauth: admin, no project
    try:
        image = Api(srv.url).reserve(name="ownerless")
        assert image["owner"] is None
    finally:
        srv.close()
