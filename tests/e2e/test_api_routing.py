"""Spec §3 and §4: the endpoint table, 405/Allow, 404/501, request ids and error bodies."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from tests.e2e.api_client import REQUEST_ID, Api, meta
from tests.support.server import Server

pytestmark = pytest.mark.e2e

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module", params=["noauth", "tokens"])
def api(request: pytest.FixtureRequest, server: Server, tokens_server: Server) -> Api:
    """This module runs in both auth modes: noauth, and tokens as alice."""
    if request.param == "noauth":
        return Api(server.url)
    return Api(tokens_server.url, "alice-token")


@pytest.fixture(scope="module")
def image(api: Api) -> dict[str, Any]:
    return api.reserve(name="routing")


# -- §3: methods not allowed --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/images", {"GET", "POST"}),
        ("HEAD", "/v1/images", {"GET", "POST"}),
        ("OPTIONS", "/v1/images", {"GET", "POST"}),
        ("PATCH", "/v1/images/{id}", {"GET", "HEAD", "PUT", "DELETE"}),
        ("HEAD", "/v1/images/{id}/members", {"GET", "PUT"}),
        ("PUT", "/v1/images", {"GET", "POST"}),
        ("POST", "/v1/images/detail", {"GET", "HEAD"}),
        ("POST", "/v1/images/{id}", {"GET", "HEAD", "PUT", "DELETE"}),
        ("POST", "/v1/images/{id}/members", {"GET", "PUT"}),
        ("DELETE", "/v1/images/{id}/members", {"GET", "PUT"}),
        ("POST", "/v1/images/{id}/members/someone", {"GET", "PUT", "DELETE"}),
    ],
)
def test_method_not_allowed_lists_allowed_methods(
    api: Api, image: dict[str, Any], method: str, path: str, allowed: set[str]
) -> None:
    resp = api.request(method, path.format(id=image["id"]))
    assert resp.status == 405, resp
    assert resp.allow() == allowed
    assert resp.request_id


def test_head_on_detail_is_405_allowing_only_get(api: Api) -> None:
    resp = api.request("HEAD", "/v1/images/detail")
    assert resp.status == 405, resp
    assert resp.allow() == {"GET"}
    assert resp.body == b""


def test_get_one_member_reads_that_membership(api: Api, image: dict[str, Any]) -> None:
    # queens answered 405 here; osimage answers the read python-glanceclient makes
    path = f"/v1/images/{image['id']}/members"
    assert api.request("GET", f"{path}/someone").status == 404
    assert api.request("PUT", f"{path}/someone", body=b'{"member": {"can_share": true}}',
                       headers={"Content-Type": "application/json"}).status == 204  # fmt: skip
    resp = api.request("GET", f"{path}/someone")
    assert resp.status == 200, resp
    assert resp.json() == {"member": {"member_id": "someone", "can_share": True}}
    other = api.request("POST", f"{path}/someone")
    assert other.status == 405
    assert other.allow() == {"GET", "PUT", "DELETE"}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_shared_images_answers_any_method(api: Api, method: str) -> None:
    resp = api.shared_images(f"nobody-{uuid.uuid4().hex}", method)
    assert resp.status == 200, resp
    assert resp.json() == {"shared_images": []}


# -- §3: unmatched paths --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/nothing",
        "/v1/images/detail.xxx",
        "/v1/images.xxx",
        "/v1/images/new",
        "/v1/images/{id}/members.xxx",
        "/v1/images/{id}/nothing",
        # Glance routes no trailing slash (but on /v1/ itself, §2): no aliases
        "/v1/images/",
        "/v1/images/detail/",
        "/v1/images/{id}/",
        "/v1/images/{id}/members/",
        "/v1/images/{id}/members/someone/",
        "/v1/shared-images/someone/",
        "/v1/shared-images/",
        "/v1/images//members",
        "/v1//images",
    ],
)
def test_unmatched_paths_are_404(api: Api, image: dict[str, Any], path: str) -> None:
    resp = api.request("GET", path.format(id=image["id"]))
    assert resp.status == 404, resp
    assert resp.request_id


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_a_trailing_slash_is_404_for_every_method(
    api: Api, image: dict[str, Any], method: str
) -> None:
    for path in ("/v1/images/", f"/v1/images/{image['id']}/"):
        resp = api.request(method, path)
        assert resp.status == 404, (path, resp)
    assert api.head(image["id"]).status == 200  # the image was there all along


def test_members_path_without_suffix_is_200(api: Api, image: dict[str, Any]) -> None:
    assert api.members(image["id"]).status == 200


def test_unknown_method_on_unmatched_path_is_501(api: Api) -> None:
    resp = api.request("PROPFIND", "/v1/nothing")
    assert resp.status == 501, resp


def test_patch_on_unmatched_path_is_404(api: Api) -> None:
    assert api.request("PATCH", "/v1/nothing").status == 404


@pytest.mark.parametrize("image_id", [MISSING, "1", "x" * 37, MISSING + "0"])
def test_unknown_or_overlong_ids_are_404(api: Api, image_id: str) -> None:
    assert api.head(image_id).status == 404
    assert api.get(image_id).status == 404
    assert api.delete(image_id).status == 404
    assert api.update(image_id, meta(name="x")).status == 404


# -- §4.2 / §4.4: request ids ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/images", 200),
        ("GET", "/v1/images/detail", 200),
        ("HEAD", f"/v1/images/{MISSING}", 404),
        ("GET", f"/v1/images/{MISSING}", 404),
        ("DELETE", "/v1/images", 405),
        ("POST", "/v1/images?x=1", 201),
    ],
)
def test_every_v1_response_carries_a_request_id(
    api: Api, method: str, path: str, status: int
) -> None:
    resp = api.request(method, path)
    assert resp.status == status, resp
    assert REQUEST_ID.match(resp.request_id or ""), resp.request_id


def test_request_ids_differ_between_requests(api: Api) -> None:
    first = api.list().request_id
    second = api.list().request_id
    assert first
    assert second
    assert first != second


def test_bad_header_answer_carries_a_request_id(api: Api) -> None:
    resp = api.create(meta(min_ram="-5"))
    assert resp.status == 400, resp
    assert REQUEST_ID.match(resp.request_id or "")


def test_tokens_mode_adopts_the_callers_request_id(users: dict[str, Api]) -> None:
    wanted = f"req-{uuid.uuid4()}"
    resp = users["alice"].request("GET", "/v1/images", {"X-Openstack-Request-ID": wanted})
    assert resp.status == 200, resp
    assert resp.request_id == wanted


def test_tokens_mode_prefixes_an_adopted_request_id(users: dict[str, Api]) -> None:
    plain = str(uuid.uuid4())
    resp = users["alice"].request("GET", "/v1/images", {"X-Openstack-Request-ID": plain})
    assert resp.status == 200, resp
    assert resp.request_id == f"req-{plain}"


def test_tokens_mode_refuses_overlong_request_ids(users: dict[str, Api]) -> None:
    resp = users["alice"].request("GET", "/v1/images", {"X-Openstack-Request-ID": "r" * 65})
    assert resp.status == 431, resp
    ok = users["alice"].request("GET", "/v1/images", {"X-Openstack-Request-ID": "r" * 60})
    assert ok.status == 200, ok


# -- §4.3: error bodies ---------------------------------------------------------------


@pytest.mark.parametrize("accept", ["application/json", "text/plain;q=0.5, application/json"])
def test_errors_are_json_when_accept_prefers_json(api: Api, accept: str) -> None:
    resp = api.request("GET", f"/v1/images/{MISSING}", {"Accept": accept})
    assert resp.status == 404, resp
    assert resp.content_type.startswith("application/json")
    body = resp.json()
    assert set(body) == {"message", "code", "title"}
    assert body["code"] == "404 Not Found"
    assert body["title"] == "Not Found"
    assert isinstance(body["message"], str)


@pytest.mark.parametrize(
    "accept", [None, "*/*", "text/html", "text/plain", "application/json;q=0.1, text/plain"]
)
def test_errors_are_plain_text_otherwise(api: Api, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    resp = api.request("GET", f"/v1/images/{MISSING}", headers)
    assert resp.status == 404, resp
    assert resp.content_type.startswith("text/plain")
    assert resp.text.startswith("404 Not Found")


def test_json_error_for_a_bad_header_names_the_header_and_value(api: Api) -> None:
    resp = api.create({**meta(min_ram="-5"), "Accept": "application/json"})
    assert resp.status == 400, resp
    body = resp.json()
    assert body["code"] == "400 Bad Request"
    assert body["title"] == "Bad Request"
    assert "min_ram" in body["message"]
    assert "-5" in body["message"]


def test_plain_error_for_405_names_the_status(api: Api) -> None:
    resp = api.request("DELETE", "/v1/images")
    assert resp.status == 405
    assert resp.text.startswith("405 Method Not Allowed")


def test_head_errors_have_an_empty_body(api: Api) -> None:
    resp = api.request("HEAD", f"/v1/images/{MISSING}", {"Accept": "application/json"})
    assert resp.status == 404
    assert resp.body == b""


def test_no_error_answer_is_a_500(api: Api) -> None:
    # a sample of awkward inputs; none may surface as an internal error
    awkward = [
        api.create(meta(size="")),
        api.create(meta(min_ram="")),
        api.list(name="foo:bar"),
        api.list(limit="abc"),
        api.replace_members(MISSING, b"not json"),
    ]
    for resp in awkward:
        assert resp.status < 500, resp


# -- §4.1 / §4.5: header line length and Expect: 100-continue --------------------------


def test_header_lines_up_to_16k_are_accepted(api: Api) -> None:
    value = "v" * 16000
    resp = api.create({"x-image-meta-property-long": value})
    assert resp.status == 201, resp
    assert resp.image["properties"] == {"long": value}


def _raw_exchange(api: Api, head: str, body: bytes, *, wait_for_continue: bool) -> bytes:
    if api.token:
        head = head.replace("\r\n", f"\r\nX-Auth-Token: {api.token}\r\n", 1)
    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        sock.sendall(head.encode())
        if wait_for_continue:
            interim = sock.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_expect_continue_upload_gets_100_then_201(api: Api) -> None:
    body = b"*" * 5120
    head = (
        f"POST /v1/images HTTP/1.1\r\nHost: {api.host}\r\nExpect: 100-continue\r\n"
        "Content-Type: application/octet-stream\r\nx-image-meta-disk_format: raw\r\n"
        f"x-image-meta-container_format: bare\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = _raw_exchange(api, head, body, wait_for_continue=True)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]


def test_expect_continue_with_a_bad_header_gets_a_final_400_without_100(api: Api) -> None:
    head = (
        f"POST /v1/images HTTP/1.1\r\nHost: {api.host}\r\nExpect: 100-continue\r\n"
        "Content-Type: application/octet-stream\r\nx-image-meta-min_ram: -1\r\n"
        "Content-Length: 5120\r\nConnection: close\r\n\r\n"
    )
    answer = _raw_exchange(api, head, b"", wait_for_continue=False)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
