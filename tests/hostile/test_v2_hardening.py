"""The hardening of issue 11 through Image API v2 (issue 12: everything v1 has applies to v2
too): project-less callers, list caps, ASCII integers, bounded JSON, protected filters,
stalled uploads, and web-download imports under the copy caps, timeouts and DELETE."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.api_client import Api, unique
from tests.e2e.v2_client import V2
from tests.hostile.test_copies import SLOW
from tests.hostile.test_uploads import read_all, send_chunk, stored_bytes, wait_until
from tests.support.server import Server, start_server
from tests.support.source import Source, serve_source
from tests.support.stored import store_kind, stored_for

pytestmark = pytest.mark.e2e

JSON_BODY_MAX = 65536
JSON_DEPTH_MAX = 8
QUERY_PARAMS_MAX = 20
LIST_FILTERS_MAX = 5
RULES = """
[^x_secret_]
create = admin
read = admin
update = admin
delete = admin

[.*]
create = @
read = @
update = @
delete = @
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("v2-hardening")
    (base / "protections.conf").write_text(RULES)
    srv = start_server(
        base,
        "--json-body-max", str(JSON_BODY_MAX),
        "--json-depth-max", str(JSON_DEPTH_MAX),
        "--query-params-max", str(QUERY_PARAMS_MAX),
        "--list-filters-max", str(LIST_FILTERS_MAX),
        "--property-protection-file", str(base / "protections.conf"),
        auth="tokens",
    )  # fmt: skip
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def v2(server: Server) -> dict[str, V2]:
    names = ("admin", "alice", "bob", "noproject")
    return {name: V2(Api(server.url, f"{name}-token")) for name in names}


def _all_names(admin: V2) -> list[str]:
    resp = admin.list("visibility=all&limit=1000")
    assert resp.status == 200, resp
    return [image["name"] for image in resp.json()["images"]]


# -- callers without a project ----------------------------------------------------------------


def test_a_projectless_caller_cannot_create_v2_images(v2: dict[str, V2]) -> None:
    name = unique("v2-nobody")
    body = {"name": name, "disk_format": "raw", "container_format": "bare"}
    resp = v2["noproject"].call("POST", "images", body)
    assert resp.status == 403, resp
    assert "without a project" in resp.text
    assert name not in _all_names(v2["admin"])
    admin_made = v2["admin"].create(name=unique("v2-admin"))  # an admin still may
    assert admin_made["owner"] == "p-admin"


def test_a_projectless_caller_cannot_add_members(v2: dict[str, V2]) -> None:
    image = v2["admin"].create(name=unique("v2-shared"))
    resp = v2["noproject"].call("POST", f"images/{image['id']}/members", {"member": "p-bob"})
    assert resp.status == 403, resp
    assert "without a project" in resp.text
    members = v2["admin"].call("GET", f"images/{image['id']}/members").json()["members"]
    assert members == []


# -- list caps, integers ----------------------------------------------------------------------


def test_query_parameter_cap(v2: dict[str, V2]) -> None:
    at_cap = "&".join(["limit=5"] * QUERY_PARAMS_MAX)
    assert v2["alice"].list(at_cap).status == 200
    resp = v2["alice"].list(f"{at_cap}&limit=6")
    assert resp.status == 400, resp
    assert "query_params_max" in resp.text


def test_list_filter_cap(v2: dict[str, V2]) -> None:
    filters = [f"p{i}=x" for i in range(LIST_FILTERS_MAX)]
    assert v2["alice"].list("&".join([*filters, "limit=3", "sort=name:asc"])).status == 200
    resp = v2["alice"].list("&".join([*filters, "name=one-more"]))
    assert resp.status == 400, resp
    assert "list_filters_max" in resp.text


@pytest.mark.parametrize(
    "query",
    [
        "limit=%D9%A1%D9%A2",  # Arabic-Indic digits, which int() takes
        "limit=1_0",
        "limit=%2B5",
        "limit=99999999999999999999",
        "size_min=9223372036854775808",
        "size_max=%D9%A5",
        "min_ram=1_000",
        "min_disk=-1",
    ],
)
def test_integer_parameters_are_ascii_within_64_bits(v2: dict[str, V2], query: str) -> None:
    resp = v2["alice"].list(query)
    assert resp.status == 400, resp


def test_integer_parameters_at_their_bounds_work(v2: dict[str, V2]) -> None:
    for query in ("limit=9223372036854775807", "size_min=0", "size_max=9223372036854775807"):
        assert v2["alice"].list(query).status == 200, query


def test_nul_in_a_query_parameter_is_a_400(v2: dict[str, V2]) -> None:
    resp = v2["alice"].list("name=a%00b")
    assert resp.status == 400, resp


# -- protected properties ---------------------------------------------------------------------


def test_a_filter_on_a_protected_property_matches_nothing(v2: dict[str, V2]) -> None:
    admin, alice = v2["admin"], v2["alice"]
    image = admin.create(name=unique("v2-secret"), visibility="public", x_secret_code="42")
    plain = admin.create(name=unique("v2-plain"), visibility="public", colour="red")
    assert image["id"] in admin.ids("x_secret_code=42")
    assert alice.ids("x_secret_code=42") == []  # no guessing the value
    assert alice.ids("x_secret_code=41") == []
    assert "x_secret_code" not in alice.show(image["id"]).json()
    assert plain["id"] in alice.ids("colour=red")  # other property filters still work


# -- JSON bodies ------------------------------------------------------------------------------


def test_a_json_body_over_json_body_max_is_a_413(v2: dict[str, V2]) -> None:
    name = unique("v2-big")
    body = {"name": name, "disk_format": "raw", "container_format": "bare"}
    body["padding"] = "x" * JSON_BODY_MAX
    resp = v2["alice"].call("POST", "images", body)
    assert resp.status == 413, resp
    assert "json_body_max" in resp.text
    assert name not in _all_names(v2["admin"])


@pytest.mark.parametrize("depth", [JSON_DEPTH_MAX + 1, 30_000])
def test_json_nested_too_deep_is_a_400(v2: dict[str, V2], depth: int) -> None:
    alice = v2["alice"]
    image = alice.create(name=unique("v2-deep"))
    deep = "[" * depth + "]" * depth
    raw = ('[{"op": "add", "path": "/x", "value": ' + deep + "}]").encode()
    headers = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    for method, path, hdrs in (
        ("PATCH", f"images/{image['id']}", headers),
        ("POST", "images", {"Content-Type": "application/json"}),
        ("POST", f"images/{image['id']}/members", {"Content-Type": "application/json"}),
    ):
        resp = alice.call(method, path, headers=hdrs, data=raw)
        assert resp.status == 400, resp
        assert "json_depth_max" in resp.text
    assert "x" not in alice.show(image["id"]).json()


# -- stalled uploads --------------------------------------------------------------------------


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "--body-timeout", "2")
    yield srv
    srv.close()


def test_a_stalled_v2_upload_is_a_408_and_the_image_is_queued_again(impatient: Server) -> None:
    v2 = V2(Api(impatient.url))
    image_id = v2.create(name=unique("v2-stalled"))["id"]
    sock = socket.create_connection(("127.0.0.1", impatient.port), timeout=60)
    try:
        sock.sendall(
            (
                f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        send_chunk(sock, b"x" * 300_000)
        wait_until(lambda: v2.show(image_id).json()["status"] == "saving", "the upload started")
        if store_kind(impatient) == "file":  # the data existed before the stall ended it
            wait_until(lambda: stored_bytes(impatient, image_id) == 300_000, "data stored")
        answer = read_all(sock)  # the server answers and closes the connection
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer
    shown = v2.show(image_id).json()
    assert (shown["status"], shown["size"], shown["checksum"]) == ("queued", None, None)
    wait_until(lambda: stored_for(impatient, image_id) == [], "partial data removed")
    assert v2.upload(image_id, b"second try").status == 204  # queued: it may be uploaded again
    assert v2.download(image_id).body == b"second try"


# -- web-download under the copy limits -------------------------------------------------------


@pytest.fixture
def source() -> Iterator[Source]:
    with serve_source() as src:
        src.scripts["/slow"] = SLOW
        yield src


def web_download(v2: V2, url: str) -> tuple[str, Any]:
    """Create an image and start its web-download import; (image id, the import answer)."""
    image_id = v2.create(name=unique("v2-import"))["id"]
    body = {"method": {"name": "web-download", "uri": url}}
    return image_id, v2.call("POST", f"images/{image_id}/import", body)


def _status(v2: V2, image_id: str) -> str:
    return str(v2.show(image_id).json().get("status", "gone"))


def test_web_download_takes_a_copy_slot(tmp_path: Path, source: Source) -> None:
    srv = start_server(
        tmp_path,
        "--allow-source-network", "127.0.0.1/32",
        "--copy-max", "2",
        "--copy-max-per-project", "1",
        auth="tokens",
    )  # fmt: skip
    try:
        alice, bob, carol = (V2(Api(srv.url, f"{n}-token")) for n in ("alice", "bob", "carol"))
        url = source.url("/slow")
        first, resp = web_download(alice, url)
        assert resp.status == 202, resp
        wait_until(lambda: source.active == 1, "the first import is running")
        refused_id, resp = web_download(alice, url)  # a second one of alice's project
        assert resp.status == 429, resp
        assert "copy_max_per_project" in resp.text
        assert _status(alice, refused_id) == "queued"  # refused before it started
        v1_copy = Api(srv.url, "alice-token").create(
            {
                "x-image-meta-name": "v1-copy",
                "x-image-meta-disk_format": "raw",
                "x-image-meta-container_format": "bare",
                "x-glance-api-copy-from": url,
            }
        )
        assert v1_copy.status == 429, v1_copy  # v1 copies and v2 imports share the caps
        _, resp = web_download(bob, url)
        assert resp.status == 202, resp
        _, resp = web_download(carol, url)  # the process cap
        assert resp.status == 503, resp
        assert "copy_max" in resp.text
        wait_until(lambda: source.active == 2, "two imports running")
        assert alice.call("DELETE", f"images/{first}").status == 204
        wait_until(lambda: source.active == 1, "the deleted image's import stopped")
        _, resp = web_download(alice, url)  # the slot came back
        assert resp.status == 202, resp
    finally:
        log = srv.log()
        srv.close()
    assert "Traceback" not in log, log[-3000:]


def test_delete_cancels_a_web_download_and_removes_its_partial_data(
    tmp_path: Path, source: Source
) -> None:
    srv = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32")
    try:
        v2 = V2(Api(srv.url))
        image_id, resp = web_download(v2, source.url("/slow"))
        assert resp.status == 202, resp
        wait_until(lambda: _status(v2, image_id) == "saving", "the import started")
        wait_until(lambda: source.served > 300_000, "data copied")
        if store_kind(srv) == "file":  # the data existed
            wait_until(lambda: stored_bytes(srv, image_id) > 0, "partial data stored")
        assert v2.call("DELETE", f"images/{image_id}").status == 204
        wait_until(lambda: source.active == 0, "the source connection closed")
        wait_until(lambda: stored_for(srv, image_id) == [], "partial data removed")
        assert v2.show(image_id).status == 404
        assert f"web-download of image {image_id} cancelled" in srv.log()
    finally:
        log = srv.log()
        srv.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("option", "value", "reason"), [("--copy-timeout", "2", "copy_timeout"),
                                    ("--copy-min-rate", "10000000", "copy_min_rate")]
)  # fmt: skip
def test_a_slow_web_download_is_stopped_and_leaves_nothing(
    tmp_path: Path, source: Source, option: str, value: str, reason: str
) -> None:
    srv = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32", option, value)
    try:
        v2 = V2(Api(srv.url))
        image_id, resp = web_download(v2, source.url("/slow"))
        assert resp.status == 202, resp
        wait_until(lambda: source.served > 100_000, "data copied")
        wait_until(lambda: _status(v2, image_id) == "queued", "the import failed", timeout=60)
        wait_until(lambda: stored_for(srv, image_id) == [], "partial data removed")
        wait_until(lambda: source.active == 0, "the source connection closed")
        assert reason in srv.log()
        shown = v2.show(image_id).json()
        assert (shown["size"], shown["checksum"]) == (None, None)
    finally:
        log = srv.log()
        srv.close()
    assert "Traceback" not in log, log[-3000:]
