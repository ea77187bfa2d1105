"""The spec's §17/§18 scenarios that matter most, through a real `osimage serve`.

Requests go over `http.client` (or a raw socket where the wire itself is under test),
so these tests see exactly the bytes the server sends.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from osimage import wire
from tests.e2e.raw_http import (
    FIVE_KIB,
    FIVE_KIB_MD5,
    FORMATS,
    OCTETS,
    as_user,
    call,
    create,
    meta,
    names,
)
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

# -- create, reserve, upload, download -------------------------------------------------

# ids no image has, fixed so that parallel test runners collect the same test ids
_ABSENT = [f"00000000-0000-4000-8000-{n:012d}" for n in range(7)]


def test_reserve_then_upload_then_download(server: Server) -> None:
    made = create(server, *meta(name="reserved", is_public=True), *FORMATS)
    assert made.status == 201, made
    image = made.image
    assert (image["status"], image["size"], image["checksum"]) == ("queued", 0, None)
    assert set(image) == set(wire.DETAIL_KEYS)
    location = made.header("location")
    assert location == f"{server.url}/v1/images/{image['id']}"
    assert made.header("etag") is None
    assert (made.header(wire.REQUEST_ID_HEADER) or "").startswith("req-")

    head = call(server, "HEAD", location.removeprefix(server.url))
    assert head.header("x-image-meta-status") == "queued"
    assert head.header("x-image-meta-size") == "0"
    assert head.header("x-image-meta-checksum") is None

    put = call(server, "PUT", f"/v1/images/{image['id']}", [OCTETS], FIVE_KIB)
    assert put.status == 200, put
    assert put.image["status"] == "active"
    assert put.image["checksum"] == FIVE_KIB_MD5
    assert put.header("etag") == FIVE_KIB_MD5

    head = call(server, "HEAD", f"/v1/images/{image['id']}")
    assert head.header("etag") == head.header("x-image-meta-checksum") == FIVE_KIB_MD5
    assert head.header(wire.SHA256_HEADER) == hashlib.sha256(FIVE_KIB).hexdigest()
    assert head.header("x-image-meta-location") is None

    got = call(server, "GET", f"/v1/images/{image['id']}")
    assert got.status == 200
    assert got.body == FIVE_KIB
    assert got.header("content-length") == "5120"
    assert got.header("content-type") == "application/octet-stream"
    assert got.header("x-image-meta-is_public") == "True"

    again = call(server, "PUT", f"/v1/images/{image['id']}", [OCTETS], FIVE_KIB)
    assert again.status == 409  # an active image takes no data


def test_create_with_data_streamed_chunked(server: Server) -> None:
    chunks = [b"a" * 70000, b"b" * 3, b"c" * 100000]
    made = create(
        server, *meta(name="chunked"), *FORMATS, ("Content-Type", "application/octet-stream")
    )
    assert made.status == 201
    put = call(server, "PUT", f"/v1/images/{made.image['id']}", [OCTETS], iter(chunks))
    assert put.status == 200, put
    assert put.image["size"] == sum(map(len, chunks))
    assert put.image["checksum"] == hashlib.md5(b"".join(chunks)).hexdigest()


def test_size_zero_is_active_at_once_and_downloads_empty(server: Server) -> None:
    made = create(server, *meta(name="empty", size=0))
    assert made.status == 201
    assert made.image["status"] == "active"
    got = call(server, "GET", f"/v1/images/{made.image['id']}")
    assert (got.status, got.body) == (200, b"")


@pytest.mark.parametrize("declared", [meta(size=5121), meta(checksum="f" * 32)])
def test_size_or_checksum_mismatch_kills_and_leaves_no_data(
    server: Server, declared: list[tuple[str, str]]
) -> None:
    made = create(server, *meta(name="mismatch"), *FORMATS, *declared, data=FIVE_KIB)
    assert made.status == 400, made
    images = [
        i
        for i in json.loads(
            call(
                server,
                "GET",
                "/v1/images/detail?is_public=none&changes-since=2000-01-01&name=mismatch",
            ).body
        )["images"]
    ]
    assert images
    assert all(i["status"] == "killed" for i in images)
    stored = {p.name for p in (server.data_dir / "images").iterdir()}
    assert not {i["id"] for i in images} & stored
    assert not [name for name in stored if name.endswith(".partial")]


def test_bad_headers_are_400_and_create_nothing(fresh_server: Server) -> None:
    for headers in (
        meta(min_ram=-5),
        [("x-image-meta-disk_format", "Invalid")],
        [("x-image-meta-bogus", "1")],
        [*meta(disk_format="aki", container_format="ami")],
    ):
        reply = create(fresh_server, *headers, *meta(is_public=True))
        assert reply.status == 400, (headers, reply)
    assert call(fresh_server, "GET", "/v1/images?is_public=none").body == b'{"images": []}'


def test_bad_content_type_on_upload_is_400(server: Server) -> None:
    reply = call(server, "POST", "/v1/images", [*FORMATS, ("Content-Type", "text/plain")], b"x")
    assert reply.status == 400
    assert b"Content-Type must be application/octet-stream" in reply.body


def test_duplicate_id_is_409(server: Server) -> None:
    image_id = str(uuid.uuid4())
    assert create(server, ("x-image-meta-id", image_id)).status == 201
    assert create(server, ("x-image-meta-id", image_id)).status == 409


# -- properties and purge --------------------------------------------------------------


def test_properties_lower_cased_and_purged_by_default(server: Server) -> None:
    made = create(
        server,
        ("X-Image-Meta-Property-Distro", "Ubuntu"),
        ("x-image-meta-property-os-type", "linux"),
    )
    image_id = made.image["id"]
    assert made.image["properties"] == {"distro": "Ubuntu", "os_type": "linux"}
    put = call(server, "PUT", f"/v1/images/{image_id}", [("X-Image-Meta-Property-Arch", "x86_64")])
    assert put.image["properties"] == {"arch": "x86_64"}  # no purge header: purged
    put = call(
        server,
        "PUT",
        f"/v1/images/{image_id}",
        [("x-image-meta-property-key3", "v"), (wire.PURGE_PROPS_HEADER, "false")],
    )
    assert put.image["properties"] == {"arch": "x86_64", "key3": "v"}
    head = call(server, "HEAD", f"/v1/images/{image_id}")
    assert head.header("x-image-meta-property-arch") == "x86_64"
    assert put.image["updated_at"] != put.image["created_at"]


def test_property_quota_is_413_and_changes_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--property-quota", "2")
    try:
        made = create(srv, *[(f"x-image-meta-property-p{i}", "v") for i in range(2)])
        assert made.status == 201
        image_id = made.image["id"]
        over = call(
            srv,
            "PUT",
            f"/v1/images/{image_id}",
            [("x-image-meta-property-p9", "v"), (wire.PURGE_PROPS_HEADER, "false")],
        )
        assert over.status == 413
        assert b"Attempted: 3, Maximum: 2" in over.body
        head = call(srv, "HEAD", f"/v1/images/{image_id}")
        assert head.header("x-image-meta-property-p9") is None
        assert create(srv, *[(f"x-image-meta-property-p{i}", "v") for i in range(3)]).status == 413
    finally:
        srv.stop()


# -- header text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    ["Ubuntu ✓ Δ".encode(), "Ubuntu%20%E2%9C%93%20%CE%94"],
    ids=["raw-utf8", "percent-encoded"],
)
def test_header_text_stored_as_meant_and_written_back_as_raw_utf8(
    server: Server, sent: str | bytes
) -> None:
    meant = "Ubuntu ✓ Δ"
    made = create(server, ("x-image-meta-name", sent), ("x-image-meta-property-note", sent))
    assert made.status == 201, made
    assert made.image["name"] == meant
    assert made.image["properties"] == {"note": meant}
    head = call(server, "HEAD", f"/v1/images/{made.image['id']}")
    assert head.text_header("x-image-meta-name") == meant
    assert head.text_header("x-image-meta-property-note") == meant


def test_invalid_utf8_header_is_400(server: Server) -> None:
    assert create(server, ("x-image-meta-name", b"\xff\xfe")).status == 400


# -- lists, filters, sorting, pagination -----------------------------------------------


def test_empty_lists_are_the_literal_documents(fresh_server: Server) -> None:
    assert call(fresh_server, "GET", "/v1/images").body == b'{"images": []}'
    assert call(fresh_server, "GET", "/v1/images/detail").body == b'{"images": []}'


def test_filters_of_the_legacy_fixture(fresh_server: Server) -> None:
    srv = fresh_server
    rows = [
        ("Image1", "ovf", "vdi", 19, True, True, "are on"),
        ("My Image!", "ovf", "vhd", 20, True, False, "are on"),
        ("My Image!", "ami", "ami", 21, True, False, "are off"),
        ("My Private Image", "ami", "ami", 22, False, False, None),
    ]
    for name, cf, df, size, public, protected, pants in rows:
        props = [("x-image-meta-property-pants", pants)] if pants else []
        made = create(
            srv,
            *meta(
                name=name,
                container_format=cf,
                disk_format=df,
                size=size,
                is_public=public,
                protected=protected,
                status="active",
            ),
            *props,
        )
        assert made.status == 201
        assert made.image["status"] == "queued"
    q = "/v1/images/detail?"
    assert len(names(call(srv, "GET", "/v1/images"))) == 3
    assert names(call(srv, "GET", "/v1/images?name=My%20Image!")) == ["My Image!", "My Image!"]
    assert len(names(call(srv, "GET", q + "status=queued"))) == 3
    assert names(call(srv, "GET", q + "status=active")) == []
    assert len(names(call(srv, "GET", q + "container_format=ovf"))) == 2
    assert names(call(srv, "GET", q + "disk_format=vdi")) == ["Image1"]
    assert len(names(call(srv, "GET", q + "size_max=20"))) == 2
    assert len(names(call(srv, "GET", q + "size_min=20"))) == 2
    assert len(names(call(srv, "GET", q + "is_public=None"))) == 4
    assert names(call(srv, "GET", q + "is_public=False")) == ["My Private Image"]
    assert names(call(srv, "GET", q + "protected=True")) == ["Image1"]
    assert len(names(call(srv, "GET", q + "protected=False"))) == 2
    assert len(names(call(srv, "GET", q + "property-pants=are%20on"))) == 2
    assert len(names(call(srv, "GET", q + "name=My%20Image!&property-pants=are%20on"))) == 1
    assert len(names(call(srv, "GET", q + "changes-since=2000-01-01"))) == 3
    assert names(call(srv, "GET", q + "changes-since=2999-01-01T00:00:00%2B01:00")) == []
    assert names(call(srv, "GET", q + "name=foo:bar")) == []  # taken literally, no 500
    for bad in (
        "size_min=-1",
        "min_ram=-1",
        "protected=imalittleteapot",
        "is_public=imalittleteapot",
        "changes-since=",
        "sort_key=owner",
        "sort_dir=up",
        "limit=-1",
        "marker=nope",
        f"marker={_ABSENT[0]}",
    ):
        assert call(srv, "GET", q + bad).status == 400, bad


def test_sort_and_keyset_pagination(fresh_server: Server) -> None:
    srv = fresh_server
    for name, size in (("Image1", 19), ("ASDF", 2), ("XYZ", 5)):
        assert create(srv, *meta(name=name, size=size, is_public=True)).status == 201
    by_id = {i["name"]: i["id"] for i in call(srv, "GET", "/v1/images").json["images"]}
    assert names(call(srv, "GET", "/v1/images")) == ["XYZ", "ASDF", "Image1"]
    assert names(call(srv, "GET", "/v1/images?sort_key=name&sort_dir=asc")) == [
        "ASDF",
        "Image1",
        "XYZ",
    ]
    assert names(call(srv, "GET", "/v1/images?sort_key=size&sort_dir=desc")) == [
        "Image1",
        "XYZ",
        "ASDF",
    ]
    after = f"/v1/images?sort_key=size&sort_dir=desc&marker={by_id['Image1']}"
    assert names(call(srv, "GET", after)) == ["XYZ", "ASDF"]
    last = f"/v1/images?sort_key=name&sort_dir=asc&marker={by_id['XYZ']}"
    assert names(call(srv, "GET", last)) == []
    assert names(call(srv, "GET", "/v1/images?limit=2")) == ["XYZ", "ASDF"]
    assert names(call(srv, "GET", f"/v1/images?limit=1&marker={by_id['ASDF']}")) == ["Image1"]
    assert names(call(srv, "GET", "/v1/images?limit=0")) == []


def test_pages_walk_the_whole_catalogue_without_repeats(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--limit-param-default", "3", "--api-limit-max", "4")
    try:
        made = {create(srv, *meta(name=f"n{i % 3}", is_public=True)).image["id"] for i in range(11)}
        seen: list[str] = []
        marker = ""
        while True:
            page = call(srv, "GET", f"/v1/images?sort_key=name&sort_dir=asc&limit=50{marker}").json[
                "images"
            ]
            assert len(page) <= 4  # capped at api_limit_max
            seen += [i["id"] for i in page]
            if len(page) < 4:
                break
            marker = f"&marker={page[-1]['id']}"
        assert len(seen) == len(set(seen)) == 11
        assert set(seen) == made
        assert len(call(srv, "GET", "/v1/images").json["images"]) == 3
    finally:
        srv.stop()


# -- delete and methods ----------------------------------------------------------------


def test_delete_is_soft_and_final(server: Server) -> None:
    made = create(server, *meta(name="doomed"), *FORMATS, data=FIVE_KIB)
    image_id = made.image["id"]
    blob = server.data_dir / "images" / image_id
    assert blob.exists()
    deleted = call(server, "DELETE", f"/v1/images/{image_id}")
    assert (deleted.status, deleted.body) == (200, b"")
    assert not blob.exists()
    head = call(server, "HEAD", f"/v1/images/{image_id}")  # noauth callers are admins
    assert head.header("x-image-meta-status") == "deleted"
    assert head.header("x-image-meta-deleted") == "True"
    assert call(server, "GET", f"/v1/images/{image_id}").status == 404
    assert call(server, "DELETE", f"/v1/images/{image_id}").status == 404
    assert call(server, "GET", f"/v1/images/{image_id}/members").status == 404


def test_protected_image_cannot_be_deleted(server: Server) -> None:
    made = create(server, *meta(name="keep", protected=True))
    assert call(server, "DELETE", f"/v1/images/{made.image['id']}").status == 403


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/images", "GET, POST"),
        ("HEAD", "/v1/images/detail", "GET"),
        ("POST", "/v1/images/detail", "GET, HEAD"),
        ("POST", "/v1/images/x", "GET, HEAD, PUT, DELETE"),
        ("POST", "/v1/images/x/members", "GET, PUT"),
        ("POST", "/v1/images/x/members/m", "GET, PUT, DELETE"),
        ("PUT", "/v1/images/x/file", "GET"),
        ("HEAD", "/v1/images/x/file", "GET"),
    ],
)
def test_method_not_allowed(server: Server, method: str, path: str, allow: str | None) -> None:
    reply = call(server, method, path)
    assert reply.status == 405
    assert reply.header("allow") == allow


def test_unmatched_paths(server: Server) -> None:
    assert call(server, "GET", "/v1/images.xxx").status == 404
    assert call(server, "GET", "/v1/nothing").status == 404
    assert call(server, "BREW", "/v1/nothing").status == 501
    assert call(server, "GET", "/v3/images").status == 300
    assert call(server, "GET", "/").status == 300
    assert call(server, "GET", "/versions").status == 200


def test_error_shape_follows_accept(server: Server) -> None:
    path = f"/v1/images/{uuid.uuid4()}"
    as_json = call(server, "GET", path, [("Accept", "application/json")])
    assert as_json.status == 404
    assert as_json.json["code"] == "404 Not Found"
    assert as_json.json["title"] == "Not Found"
    assert as_json.json["message"]
    plain = call(server, "GET", path)
    assert (plain.header("content-type") or "").startswith("text/plain")
    assert plain.body.startswith(b"404 Not Found")
    assert call(server, "HEAD", path).body == b""


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/v1/images", [("x-image-meta-size", "-1")], 400),
        ("GET", "/v1/images?limit=x", [], 400),
        ("GET", "/v1/images/detail?sort_dir=up", [], 400),
        ("GET", f"/v1/images/{_ABSENT[1]}", [], 404),
        ("PUT", f"/v1/images/{_ABSENT[2]}", [], 404),
        ("DELETE", f"/v1/images/{_ABSENT[3]}", [], 404),
        ("GET", f"/v1/images/{_ABSENT[4]}/members", [], 404),
        ("PUT", f"/v1/images/{_ABSENT[5]}/members/m", [], 404),
        ("DELETE", "/v1/images", [], 405),
        ("POST", "/v1/images/x/members/m", [], 405),
        ("GET", f"/v1/images/{_ABSENT[6]}/members/m", [], 404),
        ("GET", "/v1/nowhere", [], 404),
        ("BREW", "/v1/nowhere", [], 501),
    ],
)
def test_every_route_errs_in_one_shape(
    server: Server, method: str, path: str, headers: list[tuple[str, str]], status: int
) -> None:
    reply = call(server, method, path, [*headers, ("Accept", "application/json")])
    assert reply.status == status
    assert reply.header("content-type") == "application/json"
    assert set(reply.json) == {"message", "code", "title"}
    assert reply.json["code"] == f"{status} {reply.json['title']}"
    assert (reply.header(wire.REQUEST_ID_HEADER) or "").startswith("req-")


# -- members ---------------------------------------------------------------------------


def test_members_flow(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--member-quota", "3")
    try:
        image_id = create(srv, *meta(name="shared")).image["id"]
        base = f"/v1/images/{image_id}/members"
        assert call(srv, "PUT", f"{base}/pattieblack").status == 204
        body = json.dumps({"member": {"can_share": True}}).encode()
        assert (
            call(
                srv, "PUT", f"{base}/pattiewhite", [("Content-Type", "application/json")], body
            ).status
            == 204
        )
        listed = call(srv, "GET", base).json["members"]
        assert listed == [
            {"member_id": "pattieblack", "can_share": False},
            {"member_id": "pattiewhite", "can_share": True},
        ]
        shared = call(srv, "GET", "/v1/shared-images/pattiewhite").json["shared_images"]
        assert shared == [{"image_id": image_id, "can_share": True}]
        assert call(srv, "DELETE", f"{base}/pattieblack").status == 204
        assert call(srv, "DELETE", f"{base}/pattieblack").status == 404
        four = {"memberships": [{"member_id": f"m{i}"} for i in range(4)]}
        assert call(srv, "PUT", base, [], json.dumps(four).encode()).status == 413
        assert [m["member_id"] for m in call(srv, "GET", base).json["members"]] == ["pattiewhite"]
        two = {"memberships": [{"member_id": "a"}, {"member_id": "pattiewhite"}]}
        assert call(srv, "PUT", base, [], json.dumps(two).encode()).status == 204
        assert call(srv, "GET", base).json["members"] == [
            {"member_id": "pattiewhite", "can_share": True},  # omitted can_share kept
            {"member_id": "a", "can_share": False},
        ]
        for bad in (b"", b"[1]", b"{not json", b'{"image_memberships": []}'):
            assert call(srv, "PUT", base, [], bad).status == 400, bad
        assert call(srv, "PUT", f"{base}/b").status == 204
        assert call(srv, "PUT", f"{base}/c").status == 413  # count + 1 > quota
    finally:
        srv.stop()


# -- tenants ---------------------------------------------------------------------------


def test_tenant_isolation_basics(tokens_server: Server) -> None:
    srv = tokens_server
    made = create(
        srv, *as_user("alice-token", *meta(name="alice-private")), *FORMATS, data=FIVE_KIB
    )
    assert made.status == 201
    assert made.image["owner"] == "p-alice"
    path = f"/v1/images/{made.image['id']}"
    for method in ("HEAD", "GET", "DELETE"):
        assert call(srv, method, path, as_user("bob-token")).status == 404, method
    assert call(srv, "PUT", path, as_user("bob-token", *meta(name="x"))).status == 404
    assert call(srv, "GET", f"{path}/members", as_user("bob-token")).status == 404
    bob_list = call(srv, "GET", "/v1/images/detail?is_public=none", as_user("bob-token"))
    assert made.image["id"] not in {i["id"] for i in bob_list.json["images"]}
    assert call(srv, "GET", path, as_user("alice-token")).body == FIVE_KIB
    # shared with bob: readable, not changeable
    assert call(srv, "PUT", f"{path}/members/p-bob", as_user("alice-token")).status == 204
    assert call(srv, "GET", path, as_user("bob-token")).body == FIVE_KIB
    assert call(srv, "PUT", path, as_user("bob-token", *meta(name="x"))).status == 404
    assert call(srv, "DELETE", path, as_user("bob-token")).status == 404
    bob_list = call(srv, "GET", "/v1/images/detail", as_user("bob-token"))
    assert made.image["id"] in {i["id"] for i in bob_list.json["images"]}
    # non-admins cannot publicize or give images away
    assert call(srv, "PUT", path, as_user("alice-token", *meta(is_public=True))).status == 403
    put = call(srv, "PUT", path, as_user("alice-token", *meta(owner="p-bob")))
    assert (put.status, put.image["owner"]) == (200, "p-alice")
    assert call(srv, "GET", path).status == 401
    assert call(srv, "GET", path, as_user("wrong-token")).status == 401
    # the server is shared: leave p-bob with no memberships from this test
    assert call(srv, "DELETE", path, as_user("alice-token")).status == 200
    shared = call(srv, "GET", "/v1/shared-images/p-bob", as_user("bob-token"))
    assert made.image["id"] not in {s["image_id"] for s in shared.json["shared_images"]}


def test_the_file_alias_is_the_v1_download(tokens_server: Server) -> None:
    """GET /v1/images/{id}/file (for openstacksdk) answers exactly as GET /v1/images/{id}."""
    srv = tokens_server
    made = create(srv, *as_user("alice-token", *meta(name="via-file")), *FORMATS, data=FIVE_KIB)
    path = f"/v1/images/{made.image['id']}"
    plain = call(srv, "GET", path, as_user("alice-token"))
    alias = call(srv, "GET", f"{path}/file", as_user("alice-token"))
    assert (alias.status, alias.body) == (200, FIVE_KIB)
    varying = {"date", wire.REQUEST_ID_HEADER}
    assert sorted((k.lower(), v) for k, v in alias.headers if k.lower() not in varying) == sorted(
        (k.lower(), v) for k, v in plain.headers if k.lower() not in varying
    )
    assert alias.header("x-image-meta-checksum") == FIVE_KIB_MD5
    # the same authorization: invisible to bob until shared, 401 without a token
    assert call(srv, "GET", f"{path}/file", as_user("bob-token")).status == 404
    assert call(srv, "GET", f"{path}/file").status == 401
    assert call(srv, "PUT", f"{path}/members/p-bob", as_user("alice-token")).status == 204
    assert call(srv, "GET", f"{path}/file", as_user("bob-token")).body == FIVE_KIB
    assert call(srv, "DELETE", path, as_user("alice-token")).status == 200
    assert call(srv, "GET", f"{path}/file", as_user("alice-token")).status == 404
    assert call(srv, "GET", f"{path}/file", as_user("admin-token")).status == 404


def test_request_ids_in_tokens_mode(tokens_server: Server) -> None:
    adopted = call(
        tokens_server,
        "GET",
        "/v1/images",
        as_user("alice-token", ("X-Openstack-Request-ID", "req-abc")),
    )
    assert adopted.header(wire.REQUEST_ID_HEADER) == "req-abc"
    long_id = call(
        tokens_server,
        "GET",
        "/v1/images",
        as_user("alice-token", ("X-Openstack-Request-ID", "x" * 65)),
    )
    assert long_id.status == 431


# -- Expect: 100-continue --------------------------------------------------------------


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_expect_100_continue_on_a_raw_socket(server: Server) -> None:
    request = (
        "POST /v1/images HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Length: 5120\r\n"
        "Expect: 100-continue\r\n"
        "x-image-meta-name: continued\r\n"
        "x-image-meta-disk_format: raw\r\n"
        "x-image-meta-container_format: bare\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        interim = _read_head(sock)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(FIVE_KIB)
        final = _read_head(sock)
        assert final.startswith(b"HTTP/1.1 201 "), final

    rejected = request.replace(b"disk_format: raw", b"disk_format: nonsense")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(rejected)
        answer = _read_head(sock)
        assert answer.startswith(b"HTTP/1.1 400 "), answer  # no 100 before a rejection


def test_response_header_values_are_raw_utf8_on_the_wire(server: Server) -> None:
    made = create(server, ("x-image-meta-name", "naïve ✓".encode()))
    request = f"HEAD /v1/images/{made.image['id']} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request.encode())
        head = _read_head(sock)
    assert "x-image-meta-name: naïve ✓\r\n".encode() in head


# -- copy-from -------------------------------------------------------------------------


def test_copy_from_another_server_and_the_size_cap(server: Server, tmp_path: Path) -> None:
    source = create(server, *meta(name="origin", is_public=True), *FORMATS, data=FIVE_KIB)
    url = f"{server.url}/v1/images/{source.image['id']}"
    small = start_server(
        tmp_path, "--allow-source-network", "127.0.0.1/32", "--image-size-cap", "5000"
    )
    try:
        refused = create(small, *FORMATS, (wire.COPY_FROM_HEADER, url))
        assert refused.status == 400  # the source says 5120 bytes: over the cap
        assert b"larger than 5000 bytes" in refused.body
        assert call(small, "GET", "/v1/images?is_public=none").body == b'{"images": []}'
    finally:
        small.stop()
    roomy = start_server(tmp_path / "roomy", "--allow-source-network", "127.0.0.1/32")
    try:
        copy = create(roomy, *FORMATS, (wire.COPY_FROM_HEADER, url))
        assert copy.status == 201
        assert (copy.image["status"], copy.image["size"]) == ("queued", 5120)
        path = f"/v1/images/{copy.image['id']}"
        status = ""
        for _ in range(600):
            status = call(roomy, "HEAD", path).header("x-image-meta-status") or ""
            if status in ("active", "killed"):
                break
            time.sleep(0.05)
        assert status == "active"
        got = call(roomy, "GET", path)
        assert got.body == FIVE_KIB
        assert got.header("etag") == FIVE_KIB_MD5
    finally:
        roomy.stop()


# -- discovery and processes -----------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "major"), [("/v1", 1), ("/", 2)])
def test_keystoneauth_discovers_the_version(server: Server, endpoint: str, major: int) -> None:
    """A `/v1` endpoint stays v1; an unversioned one gets the newest version, v2 (plugins
    without a catalog, such as NoAuth, ignore min/max_version: keystoneauth's choice)."""
    from keystoneauth1 import adapter, session
    from keystoneauth1.noauth import NoAuth

    api = adapter.Adapter(
        session.Session(auth=NoAuth()),
        endpoint_override=server.url + endpoint,
        service_type="image",
        min_version="1.0",
        max_version="1.latest",
    )
    data = api.get_endpoint_data()
    assert data is not None
    assert data.url == f"{server.url}/v{major}/"
    assert data.api_version is not None
    assert data.api_version[0] == major


def test_several_workers_share_one_catalogue(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--workers", "2")
    try:
        made = {create(srv, *meta(name=f"w{i}", is_public=True)).image["id"] for i in range(6)}
        for _ in range(4):  # requests land on either worker; each sees every image
            listed = {i["id"] for i in call(srv, "GET", "/v1/images").json["images"]}
            assert made <= listed
    finally:
        srv.stop()
