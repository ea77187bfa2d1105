"""`osimage serve --auth keystone` end to end: isolation, revocation, outage, no token in logs.

Every server here validates tokens against the real Keystone; the outage tests put a
cuttable loopback TCP forwarder between the server and Keystone, so the shared Keystone
keeps running for everyone else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.api_client import Api, meta, unique
from tests.e2e.isolation_matrix import EXPECTED, KINDS, OPERATIONS
from tests.keystone.conftest import Keystone, Login, start_keystone_server
from tests.support.server import Server, start_server
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.keystone, pytest.mark.e2e]

# The actors of the isolation matrix that the test Keystone has: admin, alice (owner of
# every image built below) and bob (a tenant with no relation to them).
KEYSTONE_ACTORS = {"admin": "admin", "owner": "alice", "other": "bob"}
DATA = b"keystone isolation data"


@pytest.fixture(scope="module")
def server(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A keystone-mode server; validations are kept an hour, so the tests control expiry."""
    base = tmp_path_factory.mktemp("keystone-server")
    srv = start_keystone_server(keystone, base, "--keystone-cache-seconds", "3600")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def logins(keystone: Keystone) -> dict[str, Login]:
    return {actor: keystone.login(user) for actor, user in KEYSTONE_ACTORS.items()}


class World:
    """A client per actor and a builder for images of each kind of the matrix."""

    def __init__(self, url: str, logins: dict[str, Login]) -> None:
        self.logins = logins
        self.as_ = {actor: Api(url, login.token) for actor, login in logins.items()}
        self.admin = self.as_["admin"]

    def build(self, kind: str, *, data: bool = True) -> dict[str, Any]:
        alice = self.logins["owner"].project_id
        fields: dict[str, object] = {
            "name": unique(kind),
            "disk_format": "raw",
            "container_format": "bare",
        }
        if kind == "private":
            maker = self.as_["owner"]
        elif kind == "public":
            maker, fields = self.admin, {**fields, "owner": alice, "is_public": True}
        else:
            maker, fields = self.admin, {**fields, "owner": ""}
        resp = maker.create(meta(**fields), DATA if data else None)
        assert resp.status == 201, resp
        image = resp.image
        assert image["owner"] == (None if kind == "ownerless" else alice), image
        for member, can_share in (("p-carol", True), ("p-dave", False), ("p-extra", False)):
            added = self.admin.add_member(image["id"], member, {"member": {"can_share": can_share}})
            assert added.status == 204, added
        return image

    def members(self, image_id: str) -> set[str]:
        resp = self.admin.members(image_id)
        assert resp.status == 200, resp
        return {m["member_id"] for m in resp.json()["members"]}


@pytest.fixture(scope="module")
def world(server: Server, logins: dict[str, Login]) -> World:
    return World(server.url, logins)


@pytest.fixture(scope="module")
def shared_images(world: World) -> dict[str, dict[str, Any]]:
    return {kind: world.build(kind) for kind in KINDS}


def attempt(world: World, operation: str, actor: str, image: dict[str, Any]) -> object:
    """Do `operation` as `actor`; check the effect agrees with the answer; return the answer."""
    api, image_id = world.as_[actor], image["id"]
    if operation == "HEAD":
        return api.head(image_id).status
    if operation == "GET":
        resp = api.get(image_id)
        assert resp.status != 200 or resp.body == DATA
        return resp.status
    if operation in ("LIST", "LIST-ALL"):
        params = {"name": image["name"], **({"is_public": "none"} if "ALL" in operation else {})}
        resp = api.detail(**params)
        assert resp.status == 200, resp
        return "yes" if image_id in [i["id"] for i in resp.images] else "no"
    if operation == "GET-MEMBERS":
        resp = api.members(image_id)
        if resp.status == 200 and actor == "other":
            assert resp.json()["members"] == []  # bob is no member: sees no one's entry
        return resp.status
    if operation == "SHARED":
        resp = api.shared_images("p-carol")
        assert resp.status == 200, resp
        return "yes" if image_id in [e["image_id"] for e in resp.json()["shared_images"]] else "no"
    if operation == "PUT-META":
        resp = api.update(image_id, meta(name=f"changed-by-{actor}"))
        changed = world.admin.head(image_id).meta["name"] == f"changed-by-{actor}"
        assert changed == (resp.status == 200), resp
        return resp.status
    if operation == "PUT-DATA":
        resp = api.update(image_id, {}, DATA)
        active = world.admin.head(image_id).meta["status"] == "active"
        assert active == (resp.status == 200), resp
        return resp.status
    if operation == "DELETE":
        resp = api.delete(image_id)
        deleted = world.admin.head(image_id).meta["status"] == "deleted"
        assert deleted == (resp.status == 200), resp
        return resp.status
    if operation == "PUT-MEMBER":
        resp = api.add_member(image_id, "p-zed")
        assert ("p-zed" in world.members(image_id)) == (resp.status == 204), resp
        return resp.status
    if operation == "DELETE-MEMBER":
        resp = api.remove_member(image_id, "p-extra")
        assert ("p-extra" not in world.members(image_id)) == (resp.status == 204), resp
        return resp.status
    raise AssertionError(f"unknown operation {operation}")


READ_ONLY = {"HEAD", "GET", "LIST", "LIST-ALL", "GET-MEMBERS", "SHARED"}
CELLS = [
    pytest.param(op, kind, actor, id=f"{op}-{kind}-{actor}")
    for op in OPERATIONS
    for kind in KINDS
    for actor in KEYSTONE_ACTORS
]


@pytest.mark.parametrize(("operation", "kind", "actor"), CELLS)
def test_isolation_as_in_tokens_mode(world, shared_images, operation, kind, actor):
    """The tokens-mode isolation matrix, with identities that Keystone vouches for."""
    if operation in READ_ONLY:
        image = shared_images[kind]
    else:
        image = world.build(kind, data=operation != "PUT-DATA")
    assert attempt(world, operation, actor, image) == EXPECTED[(operation, kind, actor)]


def test_alice_and_bob_keep_to_their_own_private_images(world):
    bob = world.as_["other"]
    bobs = bob.upload(DATA, name=unique("bob-private"))
    assert bobs["owner"] == world.logins["other"].project_id
    alice = world.as_["owner"]
    assert alice.head(bobs["id"]).status == 404
    assert alice.get(bobs["id"]).status == 404
    assert alice.update(bobs["id"], meta(name="stolen")).status == 404
    assert alice.delete(bobs["id"]).status == 404
    assert bobs["id"] not in alice.detail_ids(is_public="none")
    assert bobs["id"] in world.admin.detail_ids(is_public="none")
    assert bob.get(bobs["id"]).body == DATA  # still there, unchanged


@pytest.mark.parametrize(
    "token", [None, "gAAAAABnot-a-real-token", "x" * 9000], ids=["none", "unknown", "huge"]
)
def test_no_or_bad_token_is_401(server, token):
    resp = Api(server.url, token).list()
    assert resp.status == 401, resp


def test_percent_encoded_token_works(server, logins):
    # python-glanceclient >= 2.11 percent-encodes the token header
    api = Api(server.url, quote(logins["owner"].token, safe="=+/"))
    assert api.list().status == 200


def test_revoked_token_works_until_its_cached_validation_expires(keystone, server, tmp_path):
    # kept an hour: a revoked token still works right after revocation (the documented cost)
    alice = keystone.login("alice")
    assert Api(server.url, alice.token).list().status == 200
    keystone.revoke(alice.token)
    assert Api(server.url, alice.token).list().status == 200
    # kept one second: once that second is over, Keystone is asked again and says no
    short = start_keystone_server(keystone, tmp_path / "short", "--keystone-cache-seconds", "1")
    try:
        bob = keystone.login("bob")
        api = Api(short.url, bob.token)
        assert api.list().status == 200
        keystone.revoke(bob.token)
        time.sleep(1.2)
        assert api.list().status == 401
    finally:
        short.stop()


def test_zero_cache_seconds_refuses_a_revoked_token_at_once(keystone, tmp_path):
    srv = start_keystone_server(keystone, tmp_path / "nocache", "--keystone-cache-seconds", "0")
    try:
        bob = keystone.login("bob")
        api = Api(srv.url, bob.token)
        assert api.list().status == 200
        keystone.revoke(bob.token)
        assert api.list().status == 401
    finally:
        srv.stop()


@pytest.fixture
def proxied_server(keystone: Keystone, proxy: TcpProxy, tmp_path: Path) -> Iterator[Server]:
    """A keystone-mode server that reaches Keystone only through `proxy`, logging at debug."""
    srv = start_keystone_server(
        keystone,
        tmp_path / "proxied",
        "--log-level",
        "debug",
        auth_url=keystone.proxied_url(proxy),
    )
    yield srv
    srv.stop()


def test_keystone_outage_is_503_and_recovers(keystone, proxy, proxied_server):
    before = keystone.login("alice")
    assert Api(proxied_server.url, before.token).list().status == 200
    fresh = keystone.login("bob")
    proxy.cut()
    for accept in ("application/json", "text/plain"):
        resp = Api(proxied_server.url, fresh.token).request("GET", "/v1/images", {"Accept": accept})
        assert resp.status == 503, resp
        assert "Keystone" in resp.text
        assert fresh.token not in resp.text
    head = Api(proxied_server.url, fresh.token).request("HEAD", "/v1/images/any")
    assert head.status == 503
    # a token validated before the outage keeps working while its validation is kept
    assert Api(proxied_server.url, before.token).list().status == 200
    proxy.restore()
    assert Api(proxied_server.url, fresh.token).list().status == 200


def test_tokens_and_service_password_never_reach_the_log(keystone, proxy, proxied_server):
    alice, bob = keystone.login("alice"), keystone.login("bob")
    url = proxied_server.url
    assert Api(url, alice.token).list().status == 200
    assert Api(url, quote(alice.token, safe="")).list().status == 200
    assert Api(url, "gAAAAABsecret-garbage-token").list().status == 401
    keystone.revoke(alice.token)
    proxy.cut()
    assert Api(url, bob.token).list().status == 503
    proxy.restore()
    assert Api(url, bob.token).list().status == 200
    proxied_server.stop()
    log = proxied_server.log()
    assert "/v1/images" in log  # the log is there, at debug level
    for secret in (
        alice.token,
        bob.token,
        quote(alice.token, safe=""),
        "gAAAAABsecret-garbage-token",
        keystone.service_env["OSIMAGE_KEYSTONE_PASSWORD"],
    ):
        assert secret not in log


def test_server_refuses_to_start_without_service_credentials(keystone, tmp_path):
    env = keystone.server_env()
    env["OSIMAGE_KEYSTONE_PASSWORD"] = ""
    with pytest.raises(RuntimeError, match="--keystone-password"):
        start_server(tmp_path, "--auth", "keystone", **env)
