"""The v1 <-> v2 matrix (data in crossapi_matrix.py), driven over one real tokens server.

Each scenario builds its image once (the probes only read); each cell is one test.
v1 is spoken with tests/e2e/api_client.py's raw client, v2 with raw JSON requests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.api_client import PURGE_PROPS_HEADER, Api, Response, md5, meta, props, unique
from tests.e2e.conftest import assert_no_tracebacks
from tests.e2e.crossapi_matrix import CELLS, SCENARIOS
from tests.support.server import start_server

pytestmark = pytest.mark.e2e

DATA = b"cross-api data"
assert len(DATA) == 14  # the matrix states sizes
TOKENS = {"alice": "alice-token", "bob": "bob-token", "admin": "admin-token"}
V1_FIELDS = {"name", "status", "size", "checksum", "is_public", "owner", "protected", "tags"}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Made:
    id: str
    name: str


class World:
    """Raw clients per identity, and the scenario builders of the matrix."""

    def __init__(self, url: str) -> None:
        self.as_ = {who: Api(url, token) for who, token in TOKENS.items()}
        self.alice, self.bob, self.admin = self.as_["alice"], self.as_["bob"], self.as_["admin"]
        self.built: dict[str, Made] = {}

    # -- v2 requests ------------------------------------------------------------------

    def v2(self, who: str, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        headers = dict(kw.pop("headers", JSON if body is not None else {}))
        data = json.dumps(body).encode() if body is not None else None
        return self.as_[who].request(method, f"/v2/{path}", headers, data, **kw)

    def v2_create(self, who: str = "alice", **fields: Any) -> Made:
        name = unique("xapi")
        resp = self.v2(who, "POST", "images", {"name": name, **FORMATS, **fields})
        assert resp.status == 201, resp
        return Made(resp.json()["id"], name)

    def v2_upload(self, made: Made, who: str = "alice") -> None:
        octets = {"Content-Type": "application/octet-stream"}
        resp = self.as_[who].request("PUT", f"/v2/images/{made.id}/file", octets, DATA)
        assert resp.status == 204, resp

    def v2_ok(self, who: str, method: str, path: str, body: Any = None, ok: int = 200) -> None:
        resp = self.v2(who, method, path, body)
        assert resp.status == ok, resp

    # -- v1 requests ------------------------------------------------------------------

    def v1_create(self, who: str = "alice", data: bytes | None = DATA, **fields: Any) -> Made:
        name = unique("xapi")
        properties = fields.pop("properties", {})
        fields = {"name": name, **FORMATS, **fields}
        resp = self.as_[who].create({**meta(**fields), **props(**properties)}, data)
        assert resp.status == 201, resp
        return Made(resp.image["id"], name)

    # -- scenarios --------------------------------------------------------------------

    def build(self, scenario: str) -> Made:
        if scenario not in self.built:
            self.built[scenario] = BUILDERS[scenario](self)
        return self.built[scenario]


FORMATS = {"disk_format": "raw", "container_format": "bare"}


def _v1_private(w: World) -> Made:
    made = w.v1_create(is_public=False, properties={"os_distro": "ubuntu", "note": ""})
    added = {"X-Image-Meta-Property-OS-Type": "linux", PURGE_PROPS_HEADER: "false"}
    resp = w.alice.update(made.id, added)
    assert resp.status == 200, resp
    return made


def _v1_member(w: World) -> Made:
    made = _v1_private(w)
    resp = w.alice.add_member(made.id, "p-bob")
    assert resp.status == 204, resp
    return made


def _v1_member_acc(w: World) -> Made:
    made = _v1_member(w)
    w.v2_ok("bob", "PUT", f"images/{made.id}/members/p-bob", {"status": "accepted"})
    return made


def _v1_deleted(w: World) -> Made:
    made = _v1_private(w)
    resp = w.alice.delete(made.id)
    assert resp.status == 200, resp
    return made


def _v1_shares_private(w: World) -> Made:
    made = w.v2_create(visibility="private")
    resp = w.alice.update(made.id, meta(is_public=False))
    assert resp.status == 200, resp
    return made


def _v1_purges(w: World) -> Made:
    made = w.v2_create(keep="1")
    resp = w.alice.update(made.id, props(other="2"))
    assert resp.status == 200, resp
    return made


def _v1_uploads(w: World) -> Made:
    made = w.v2_create()
    resp = w.alice.update(made.id, {"Content-Type": "application/octet-stream"}, DATA)
    assert resp.status == 200, resp
    return made


def _v1_publishes(w: World) -> Made:
    made = w.v2_create(visibility="private")
    resp = w.admin.update(made.id, meta(is_public=True))
    assert resp.status == 200, resp
    return made


def _v1_replaces(w: World) -> Made:
    made = _v2_member_status("accepted")(w)
    body = {"memberships": [{"member_id": "p-bob"}, {"member_id": "p-carol"}]}
    resp = w.alice.replace_members(made.id, body)
    assert resp.status == 204, resp
    return made


def _v2_uploads(w: World) -> Made:
    made = w.v1_create(data=None)
    octets = {"Content-Type": "application/octet-stream"}
    resp = w.alice.request("PUT", f"/v2/images/{made.id}/file", octets, DATA)
    assert resp.status == 204, resp
    return made


def _v2_private(w: World) -> Made:
    made = w.v2_create(visibility="private", os_distro="ubuntu")
    w.v2_upload(made)
    return made


def _v2_public(w: World) -> Made:
    made = w.v2_create("admin", visibility="public", owner="p-alice")
    w.v2_upload(made, "admin")
    return made


def _v2_community(w: World) -> Made:
    made = w.v2_create(visibility="community")
    w.v2_upload(made)
    return made


def _v2_member(w: World) -> Made:
    made = w.v2_create()
    w.v2_ok("alice", "POST", f"images/{made.id}/members", {"member": "p-bob"})
    return made


def _v2_member_status(status: str) -> Callable[[World], Made]:
    def build(w: World) -> Made:
        made = _v2_member(w)
        w.v2_ok("bob", "PUT", f"images/{made.id}/members/p-bob", {"status": status})
        return made

    return build


def _v2_tagged(w: World) -> Made:
    made = _v2_private(w)
    w.v2_ok("alice", "PUT", f"images/{made.id}/tags/blue", ok=204)
    return made


def _v2_deleted(w: World) -> Made:
    made = _v2_private(w)
    w.v2_ok("alice", "DELETE", f"images/{made.id}", ok=204)
    return made


def _v2_deactivated(w: World) -> Made:
    made = _v2_private(w)
    w.v2_ok("alice", "POST", f"images/{made.id}/actions/deactivate", ok=204)
    return made


BUILDERS: dict[str, Callable[[World], Made]] = {
    "v1-private": _v1_private,
    "v1-default": lambda w: w.v1_create(data=None),
    "v1-public": lambda w: w.v1_create("admin", is_public=True, owner="p-alice"),
    "v1-member": _v1_member,
    "v1-member-acc": _v1_member_acc,
    "v1-deleted": _v1_deleted,
    "v1-shares-private": _v1_shares_private,
    "v1-purges": _v1_purges,
    "v1-uploads": _v1_uploads,
    "v1-publishes": _v1_publishes,
    "v1-replaces": _v1_replaces,
    "v2-uploads": _v2_uploads,
    "v2-private": _v2_private,
    "v2-shared": lambda w: w.v2_create(),
    "v2-public": _v2_public,
    "v2-community": _v2_community,
    "v2-member": _v2_member,
    "v2-member-rej": _v2_member_status("rejected"),
    "v2-member-acc": _v2_member_status("accepted"),
    "v2-tagged": _v2_tagged,
    "v2-hidden": lambda w: w.v2_create(os_hidden=True),
    "v2-deleted": _v2_deleted,
    "v2-deactivated": _v2_deactivated,
}


def _value(field: str, value: object) -> str:
    """A field as the matrix writes it."""
    if value is None:
        return "none"
    if field == "checksum" and value == md5(DATA):
        return "md5"
    if field == "os_hash_value" and value == hashlib.sha512(DATA).hexdigest():
        return "sha512"
    return str(value)


def _listed(resp: Response, made: Made) -> str:
    assert resp.status == 200, resp
    return "yes" if made.id in [i["id"] for i in resp.json()["images"]] else "no"


def probe_v2(w: World, who: str, what: str, made: Made) -> str:
    if what == "show":
        return str(w.v2(who, "GET", f"images/{made.id}").status)
    if what == "data":
        resp = w.v2(who, "GET", f"images/{made.id}/file")
        if resp.status == 200:
            assert resp.body == DATA
        return str(resp.status)
    if what in ("list", "list-pending"):
        params = {"name": made.name}
        if what == "list-pending":
            params["member_status"] = "pending"
        return _listed(w.v2(who, "GET", "images", params=params), made)
    if what == "members":
        resp = w.v2(who, "GET", f"images/{made.id}/members")
        assert resp.status == 200, resp
        members = sorted(f"{m['member_id']}={m['status']}" for m in resp.json()["members"])
        return ",".join(members) or "none"
    resp = w.v2(who, "GET", f"images/{made.id}")
    assert resp.status == 200, resp
    return _value(what, resp.json().get(what))


def probe_v1(w: World, who: str, what: str, made: Made) -> str:
    api = w.as_[who]
    if what == "head":
        return str(api.head(made.id).status)
    if what == "data":
        resp = api.get(made.id)
        if resp.status == 200:
            assert resp.body == DATA
        return str(resp.status)
    if what == "list":
        return _listed(api.detail(name=made.name), made)
    if what == "members":
        resp = api.members(made.id)
        assert resp.status == 200, resp
        return ",".join(sorted(m["member_id"] for m in resp.json()["members"])) or "none"
    head = api.head(made.id)
    assert head.status == 200, head
    if what == "tags":  # neither a header nor a key of the JSON record
        [record] = [i for i in api.detail(name=made.name).images if i["id"] == made.id]
        assert "tags" not in record
        return _value(what, head.meta.get("tags"))
    if what in V1_FIELDS:
        return _value(what, head.meta.get(what))
    return _value(what, head.properties.get(what))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = start_server(tmp_path_factory.mktemp("crossapi"), auth="tokens")
    yield World(srv.url)
    assert_no_tracebacks(srv)
    srv.close()


def observe(w: World, probe: str, made: Made) -> str:
    api_who, what = probe.split(":", 1)
    api, _, who = api_who.partition("-")
    reader = probe_v1 if api == "v1" else probe_v2
    return reader(w, who or "alice", what, made)


@pytest.mark.parametrize(
    ("scenario", "probe", "expected"),
    [pytest.param(*cell, id=f"{cell[0]}--{cell[1]}") for cell in CELLS],
)
def test_crossapi(world: World, scenario: str, probe: str, expected: str) -> None:
    made = world.build(scenario)
    assert observe(world, probe, made) == expected


def test_the_matrix_covers_both_directions() -> None:
    assert set(SCENARIOS) == set(BUILDERS)
    directions = {(scenario[:2], probe[:2]) for scenario, probe, _ in CELLS}
    assert {("v1", "v2"), ("v2", "v1")} <= directions
    assert len(CELLS) > 60
