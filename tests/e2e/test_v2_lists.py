"""Image API v2 lists (spec v2 §6): the visibility pool per caller, member status,
filters and their operators, sorting, and `first`/`next` paging, on a fresh tokens server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.api_client import Api
from tests.e2e.conftest import assert_no_tracebacks
from tests.e2e.v2_client import V2
from tests.support.server import start_server

pytestmark = pytest.mark.e2e
OWNERS = {"admin": "p-admin", "alice": "p-alice", "bob": "p-bob"}
VISIBILITIES = ("public", "private", "shared", "community")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh catalogue: one image per owner x visibility (12), as in the queens
    visibility test, plus the clients."""
    srv = start_server(tmp_path_factory.mktemp("v2lists"), auth="tokens")
    clients = {name: V2(Api(srv.url, f"{name}-token")) for name in (*OWNERS, "carol", "noproject")}
    made: dict[tuple[str, str], str] = {}
    for owner in OWNERS:
        for visibility in VISIBILITIES:
            image = clients["admin"].create(
                name=f"{owner}-{visibility}", visibility=visibility, owner=OWNERS[owner]
            )
            made[owner, visibility] = image["id"]
    yield {"v2": clients, "made": made, "server": srv}
    assert_no_tracebacks(srv)
    srv.stop()


def names(v2: V2, query: str = "") -> set[str]:
    resp = v2.list(f"limit=1000&{query}")
    assert resp.status == 200, resp
    return {image["name"] for image in resp.json()["images"] if "-" in (image["name"] or "")}


def test_visibility_pool_per_caller(world: dict[str, Any]) -> None:
    v2 = world["v2"]
    publics = {f"{o}-public" for o in OWNERS}
    communities = {f"{o}-community" for o in OWNERS}
    assert names(v2["alice"]) == publics | {f"alice-{v}" for v in VISIBILITIES}
    assert names(v2["alice"], "visibility=public") == publics
    assert names(v2["alice"], "visibility=private") == {"alice-private"}
    assert names(v2["alice"], "visibility=shared") == {"alice-shared"}
    assert names(v2["alice"], "visibility=community") == communities
    assert names(v2["alice"], "visibility=all") == publics | communities | {
        "alice-private",
        "alice-shared",
    }
    assert names(v2["noproject"]) == publics
    assert names(v2["noproject"], "visibility=community") == communities
    assert names(v2["noproject"], "visibility=private") == set()
    everything = {f"{o}-{v}" for o in OWNERS for v in VISIBILITIES}
    assert names(v2["admin"]) == everything - {"alice-community", "bob-community"}
    assert names(v2["admin"], "visibility=private") == {f"{o}-private" for o in OWNERS}
    assert names(v2["admin"], "visibility=all") == everything


def test_member_status_decides_the_members_list(world: dict[str, Any]) -> None:
    v2, made = world["v2"], world["made"]
    shared = made["alice", "shared"]
    alice, carol = v2["alice"], v2["carol"]
    assert alice.call("POST", f"images/{shared}/members", {"member": "p-carol"}).status == 200
    assert "alice-shared" not in names(carol)
    assert "alice-shared" not in names(carol, "visibility=shared")
    assert "alice-shared" in names(carol, "member_status=pending")
    assert "alice-shared" in names(carol, "member_status=all")
    assert names(carol, "member_status=pending&visibility=shared") == {"alice-shared"}
    assert carol.show(shared).status == 200  # readable in any member status
    member = f"images/{shared}/members/p-carol"
    assert carol.call("PUT", member, {"status": "accepted"}).status == 200
    assert "alice-shared" in names(carol)
    assert carol.call("PUT", member, {"status": "rejected"}).status == 200
    assert "alice-shared" not in names(carol)
    assert "alice-shared" in names(carol, "member_status=rejected")
    assert carol.list("member_status=maybe").status == 400


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=alice-public", {"alice-public"}),
        ("name=in:alice-public,bob-public", {"alice-public", "bob-public"}),
        ('name=in:"alice-public",bob-private', {"alice-public", "bob-private"}),
        ("name=eq:alice-public", {"alice-public"}),
        ("name=in:alice-public&owner=p-bob", set()),
        ("visibility=private&owner=p-bob", {"bob-private"}),
        ("status=in:queued,active&name=bob-shared", {"bob-shared"}),
        ("status=killed", set()),
    ],
)
def test_filters(world: dict[str, Any], query: str, expected: set[str]) -> None:
    assert names(world["v2"]["admin"], f"visibility=all&{query}") == expected


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("name=foo:bar", "unknown operator 'foo'"),
        ('name=in:"unbalanced', "unbalanced"),
        ("created_at=soon:2020-01-01T00:00:00Z", "unknown operator"),
        ("created_at=gt:yesterday", "ISO 8601"),
        ("changes-since=2020-01-01", "no longer available"),
        ("limit=x", "must be an integer"),
        ("limit=-1", "must be positive"),
        ("sort_key=owner", "Invalid sort key"),
        ("sort_dir=up", "Invalid sort direction"),
        ("sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc&sort_dir=asc", "does not match"),
        ("sort=name&sort_key=size", "cannot be combined"),
        ("protected=False", "Valid values are 'true' or 'false'"),
        ("size_min=big", "non-numeric"),
        ("visibility=everyone", "Invalid visibility value"),
        ("marker=00000000-0000-0000-0000-000000000000", "marker"),
    ],
)
def test_bad_list_queries_are_400(world: dict[str, Any], query: str, text: str) -> None:
    resp = world["v2"]["alice"].list(query)
    assert resp.status == 400, resp
    assert text in resp.text


def test_created_at_operators(world: dict[str, Any]) -> None:
    alice = world["v2"]["alice"]
    first = alice.show(world["made"]["alice", "public"]).json()["created_at"]
    later = names(alice, f"created_at=gte:{quote(first)}&visibility=all")
    assert "alice-public" in later
    assert names(alice, "created_at=lt:2000-01-01T00:00:00Z") == set()
    assert "alice-public" in names(alice, "created_at=gt:2000-01-01T00:00:00%2B02:00")


def test_sorting(world: dict[str, Any]) -> None:
    admin = world["v2"]["admin"]
    for query in ("sort=name:asc", "sort_key=name&sort_dir=asc"):
        got = [i["name"] for i in admin.list(f"visibility=all&limit=1000&{query}").json()["images"]]
        ours = [n for n in got if n in {f"{o}-{v}" for o in OWNERS for v in VISIBILITIES}]
        assert ours == sorted(ours)
    got = [i["name"] for i in admin.list("visibility=all&limit=1000&sort=name").json()["images"]]
    assert got == sorted(got, reverse=True)  # a key without a direction sorts desc
    newest = admin.list("visibility=all&limit=1000").json()["images"]
    assert [i["created_at"] for i in newest] == sorted(
        (i["created_at"] for i in newest), reverse=True
    )


def test_paging_follows_next_links(world: dict[str, Any]) -> None:
    admin = world["v2"]["admin"]
    everything = admin.list("visibility=all&limit=1000&sort=name:asc").json()["images"]
    pages: list[list[str]] = []
    path = "images?visibility=all&limit=5&sort=name:asc"
    while True:
        resp = admin.call("GET", path)
        assert resp.status == 200, resp
        doc = resp.json()
        assert doc["first"] == "/v2/images?visibility=all&limit=5&sort=name%3Aasc"
        assert doc["schema"] == "/v2/schemas/images"
        pages.append([i["id"] for i in doc["images"]])
        if "next" not in doc:
            break
        assert len(doc["images"]) == 5
        path = doc["next"].removeprefix("/v2/")
    assert [i for page in pages for i in page] == [i["id"] for i in everything]
    assert admin.list("limit=0").json()["images"] == []


def test_hidden_images(world: dict[str, Any]) -> None:
    alice = world["v2"]["alice"]
    hidden = alice.create(name="hidden-one", os_hidden=True)
    assert hidden["os_hidden"] is True
    assert hidden["id"] not in alice.ids("limit=1000")
    assert alice.ids("os_hidden=true&name=hidden-one") == [hidden["id"]]
    assert alice.ids("os_hidden=TRUE&name=hidden-one") == [hidden["id"]]
    assert alice.list("os_hidden=maybe").status == 400
    assert hidden["id"] in alice.api.detail_ids(name="hidden-one")  # v1 does not hide it


def test_property_tag_and_size_filters(world: dict[str, Any]) -> None:
    alice = world["v2"]["alice"]
    one = alice.create(name="props-a", os_distro="ubuntu", flavour="x", tags=["red", "big"])
    alice.upload(one["id"], b"12345")
    two = alice.create(name="props-b", os_distro="ubuntu", tags=["red"])
    assert set(alice.ids("os_distro=ubuntu&limit=1000")) >= {one["id"], two["id"]}
    assert alice.ids("os_distro=ubuntu&flavour=x") == [one["id"]]
    assert alice.ids("tag=red&tag=big") == [one["id"]]
    assert alice.ids("name=props-a&size_min=5&size_max=5") == [one["id"]]
    assert alice.ids("name=props-a&size_min=6") == []
    assert alice.ids("name=props-a&protected=false") == [one["id"]]
    assert alice.ids("name=in:props-a,props-b&sort=name:asc") == [one["id"], two["id"]]
    checksum = alice.show(one["id"]).json()["checksum"]
    assert alice.ids(f"checksum={checksum}") == [one["id"]]


def test_killed_images_are_never_listed(world: dict[str, Any]) -> None:
    """A v1 upload cut short leaves a `killed` image: v2 shows it by id, lists never."""
    alice = world["v2"]["alice"]
    made = alice.api.reserve(
        name="to-be-killed", disk_format="raw", container_format="bare", size=10
    )
    bad = alice.api.update(
        made["id"],
        {"Content-Type": "application/octet-stream", "x-image-meta-checksum": "0" * 32},
        b"0123456789",
    )
    assert bad.status == 400
    deadline = time.monotonic() + 10
    while alice.show(made["id"]).json()["status"] != "killed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alice.show(made["id"]).json()["status"] == "killed"
    assert made["id"] not in alice.ids("limit=1000&visibility=all")
    assert made["id"] not in world["v2"]["admin"].ids("limit=1000&visibility=all&status=killed")
