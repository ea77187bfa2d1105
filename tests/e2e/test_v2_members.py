"""Image API v2 members (spec v2 §10, §18.5): who may do what, status, and members
added through v1, on the shared tokens server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tests.e2e.api_client import Api
from tests.e2e.v2_client import V2
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
def member_schema(v2: dict[str, V2]) -> dict[str, Any]:
    schema: dict[str, Any] = v2["alice"].call("GET", "schemas/member").json()
    return schema


def test_member_lifecycle(v2: dict[str, V2], member_schema: Any) -> None:
    alice, bob, carol = v2["alice"], v2["bob"], v2["carol"]
    image = alice.create()
    members = f"images/{image['id']}/members"
    resp = alice.call("POST", members, {"member": "p-bob"})
    assert resp.status == 200, resp  # 200, not 201
    entry = resp.json()
    jsonschema.validate(entry, member_schema)
    assert (entry["member_id"], entry["image_id"], entry["status"]) == (
        "p-bob",
        image["id"],
        "pending",
    )
    assert entry["schema"] == "/v2/schemas/member"
    assert alice.call("POST", members, {"member": "p-bob"}).status == 409
    listed = alice.call("GET", members).json()
    assert listed["schema"] == "/v2/schemas/members"
    assert [(m["member_id"], m["status"]) for m in listed["members"]] == [("p-bob", "pending")]
    # bob reads it at once, sees only his own entry, and alone sets his status
    assert bob.show(image["id"]).status == 200
    assert [m["member_id"] for m in bob.call("GET", members).json()["members"]] == ["p-bob"]
    assert alice.call("PUT", f"{members}/p-bob", {"status": "accepted"}).status == 403
    resp = bob.call("PUT", f"{members}/p-bob", {"status": "accepted"})
    assert resp.status == 200
    assert resp.json()["status"] == "accepted"
    assert bob.call("GET", f"{members}/p-bob").json()["status"] == "accepted"
    # others: 404 for the image, or 403/404 for the member calls
    assert carol.call("GET", members).status == 404
    assert carol.call("POST", members, {"member": "p-carol"}).status == 404
    assert bob.call("POST", members, {"member": "p-carol"}).status == 403
    assert bob.call("DELETE", f"{members}/p-bob").status == 403
    assert alice.call("GET", f"{members}/p-carol").status == 404
    # removal
    assert alice.call("DELETE", f"{members}/p-bob").status == 204
    assert alice.call("DELETE", f"{members}/p-bob").status == 404
    assert bob.show(image["id"]).status == 404
    # added again: pending again
    again = alice.call("POST", members, {"member": "p-bob"}).json()
    assert again["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({}, "Member to be added not specified"),
        ({"member": ""}, "Member can't be empty"),
        (["p-bob"], "Expected a member"),
    ],
)
def test_add_member_body_errors(v2: dict[str, V2], body: Any, text: str) -> None:
    image = v2["alice"].create()
    resp = v2["alice"].call("POST", f"images/{image['id']}/members", body)
    assert resp.status == 400
    assert text in resp.text


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({}, "Status not specified"),
        ({"status": "maybe"}, "Incorrect request"),
        ([], "Expected a status"),
    ],
)
def test_member_status_body_errors(v2: dict[str, V2], body: Any, text: str) -> None:
    image = v2["alice"].create()
    v2["alice"].call("POST", f"images/{image['id']}/members", {"member": "p-bob"})
    resp = v2["bob"].call("PUT", f"images/{image['id']}/members/p-bob", body)
    assert resp.status == 400
    assert text in resp.text


@pytest.mark.parametrize("visibility", ["private", "community"])
def test_only_shared_images_have_members(v2: dict[str, V2], visibility: str) -> None:
    image = v2["alice"].create(visibility=visibility)
    resp = v2["alice"].call("POST", f"images/{image['id']}/members", {"member": "p-bob"})
    assert resp.status == 403
    assert "Only shared images have members" in resp.text
    assert v2["alice"].call("GET", f"images/{image['id']}/members").status == 403


def test_private_keeps_member_rows_that_grant_nothing(v2: dict[str, V2]) -> None:
    alice, bob = v2["alice"], v2["bob"]
    image = alice.create()
    alice.call("POST", f"images/{image['id']}/members", {"member": "p-bob"})
    bob.call("PUT", f"images/{image['id']}/members/p-bob", {"status": "accepted"})

    def to(visibility: str) -> list[dict[str, str]]:
        return [{"op": "replace", "path": "/visibility", "value": visibility}]

    assert alice.patch(image["id"], to("private")).status == 200
    assert bob.show(image["id"]).status == 404
    assert bob.api.head(image["id"]).status == 404  # nor in v1
    assert alice.patch(image["id"], to("shared")).status == 200
    got = alice.call("GET", f"images/{image['id']}/members").json()["members"]
    assert [(m["member_id"], m["status"]) for m in got] == [("p-bob", "accepted")]
    assert image["id"] in bob.ids("limit=1000")


def test_members_added_through_v1_are_pending_in_v2(v2: dict[str, V2]) -> None:
    alice, bob = v2["alice"], v2["bob"]
    made = alice.api.reserve(name="v1-shared")
    assert alice.api.add_member(made["id"], "p-bob").status == 204
    got = alice.show(made["id"]).json()
    assert got["visibility"] == "shared"  # a v1 image that is not public is shared
    entries = alice.call("GET", f"images/{made['id']}/members").json()["members"]
    assert [(m["member_id"], m["status"]) for m in entries] == [("p-bob", "pending")]
    assert made["id"] in bob.api.detail_ids()  # v1 lists it at once
    assert made["id"] not in bob.ids("limit=1000")  # v2 once accepted
    assert made["id"] in bob.ids("limit=1000&member_status=pending")
    bob.call("PUT", f"images/{made['id']}/members/p-bob", {"status": "accepted"})
    assert made["id"] in bob.ids("limit=1000")
    # v1 still shows the member (no status in v1), and a v1 replace-all keeps the status
    assert [m["member_id"] for m in alice.api.members(made["id"]).json()["members"]] == ["p-bob"]
    body = {"memberships": [{"member_id": "p-bob"}, {"member_id": "p-carol"}]}
    assert alice.api.replace_members(made["id"], body).status == 204
    entries = alice.call("GET", f"images/{made['id']}/members").json()["members"]
    assert sorted((m["member_id"], m["status"]) for m in entries) == [
        ("p-bob", "accepted"),
        ("p-carol", "pending"),
    ]


def test_member_quota(limited: Api) -> None:
    v2 = V2(limited)
    image = v2.create()
    for index in range(10):
        assert (
            v2.call("POST", f"images/{image['id']}/members", {"member": f"m{index}"}).status == 200
        )
    assert v2.call("POST", f"images/{image['id']}/members", {"member": "m10"}).status == 413
