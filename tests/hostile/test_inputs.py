"""No input makes a 500: values the database or the standard library cannot hold are 400s
naming the header or parameter, and JSON bodies are bounded in size and depth (#11 item 5).

Every test runs against one real `osimage serve` (on the backend `OSIMAGE_TEST_BACKEND`
selects: PostgreSQL refuses more than SQLite does), and the server must log no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.e2e.api_client import PREFIX, Api, meta
from tests.support.server import Server, start_server

JSON_BODY_MAX = 65536
JSON_DEPTH_MAX = 8
QUERY_PARAMS_MAX = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("inputs"),
        "--json-body-max", str(JSON_BODY_MAX),
        "--json-depth-max", str(JSON_DEPTH_MAX),
        "--query-params-max", str(QUERY_PARAMS_MAX),
    )  # fmt: skip
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def api(server: Server) -> Api:
    return Api(server.url)


@pytest.fixture(scope="module")
def image(api: Api) -> str:
    return str(api.reserve(name="target", is_public=True)["id"])


# -- dates ------------------------------------------------------------------------------

# Valid ISO 8601 times that leave the range of `datetime` once moved to UTC.
OUT_OF_RANGE_TIMES = ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00")


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
def test_changes_since_out_of_range_is_a_400(api: Api, when: str) -> None:
    resp = api.request("GET", f"/v1/images/detail?changes-since={quote(when)}")
    assert resp.status == 400, resp
    assert "changes-since" in resp.text


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
def test_time_headers_out_of_range_are_400s(api: Api, field: str, when: str) -> None:
    resp = api.create(meta(name="t", **{field: when}))
    assert resp.status == 400, resp
    assert PREFIX + field in resp.text


def test_time_headers_in_range_are_accepted(api: Api) -> None:
    assert api.create(meta(name="t", created_at="9999-12-31T23:59:59+00:00")).status == 201
    resp = api.request("GET", "/v1/images/detail?changes-since=9999-12-31T23:59:59-00:00")
    assert resp.status == 200, resp


# -- integers ---------------------------------------------------------------------------

# ...and Arabic-Indic and fullwidth digits, which Python's int() reads
NOT_DECIMAL = ("1_0", "+5", "0x10", "1e3", "5 5", "-1", "\u0661\u0662", "\uff11\uff12")
TOO_LARGE = (str(2**63), str(2**64), "9" * 30, "9" * 5000)


@pytest.mark.parametrize("field", ["size", "virtual_size", "min_ram", "min_disk"])
@pytest.mark.parametrize("value", NOT_DECIMAL + TOO_LARGE)
def test_integer_headers_take_ascii_digits_within_range(api: Api, field: str, value: str) -> None:
    resp = api.create([(PREFIX + field, value.encode())])
    assert resp.status == 400, resp
    assert PREFIX + field in resp.text


@pytest.mark.parametrize("field", ["min_ram", "min_disk"])
def test_32_bit_fields_refuse_the_next_value(api: Api, field: str) -> None:
    assert api.create(meta(**{field: 2**31 - 1})).status == 201
    resp = api.create(meta(**{field: 2**31}))
    assert resp.status == 400, resp
    assert PREFIX + field in resp.text


def test_the_largest_size_is_accepted_then_refused_by_the_cap(api: Api) -> None:
    resp = api.create(meta(size=2**63 - 1))
    assert resp.status == 400, resp  # a size over the image size cap: refused, no 500
    assert "larger than" in resp.text


@pytest.mark.parametrize("name", ["size_min", "size_max", "min_ram", "min_disk", "limit"])
@pytest.mark.parametrize("value", NOT_DECIMAL + TOO_LARGE)
def test_integer_parameters_take_ascii_digits_within_range(api: Api, name: str, value: str) -> None:
    resp = api.request("GET", f"/v1/images/detail?{name}={quote(value)}")
    assert resp.status == 400, resp
    assert name in resp.text


@pytest.mark.parametrize("name", ["min_ram", "min_disk"])
def test_32_bit_filters_refuse_what_their_column_cannot_hold(api: Api, name: str) -> None:
    assert api.request("GET", f"/v1/images/detail?{name}={2**31 - 1}").status == 200
    resp = api.request("GET", f"/v1/images/detail?{name}={2**31}")
    assert resp.status == 400, resp
    assert name in resp.text


def test_integer_parameters_at_their_bounds_work(api: Api) -> None:
    for name in ("size_min", "size_max", "limit"):
        resp = api.request("GET", f"/v1/images/detail?{name}={2**63 - 1}")
        assert resp.status == 200, resp


# -- text no column holds ---------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["name=%00", "property-a%00=b", "property-a=b%00", "status=%00x", "x%00=1"]
)
def test_nul_in_a_query_parameter_is_a_400(api: Api, query: str) -> None:
    resp = api.request("GET", f"/v1/images/detail?{query}")
    assert resp.status == 400, resp
    assert "NUL" in resp.text


def test_nul_in_ids_is_no_match(api: Api, image: str) -> None:
    assert api.request("GET", "/v1/images/%00").status == 404
    assert api.request("HEAD", "/v1/images/a%00b").status == 404
    assert api.request("DELETE", f"/v1/images/{image}/members/%00").status == 404
    resp = api.request("GET", "/v1/shared-images/%00")
    assert resp.status == 200, resp
    assert resp.json() == {"shared_images": []}


# -- query parameters -------------------------------------------------------------------


def test_query_parameter_cap(api: Api) -> None:
    at_cap = "&".join(f"unknown{i}=1" for i in range(QUERY_PARAMS_MAX))
    assert api.request("GET", f"/v1/images/detail?{at_cap}").status == 200
    resp = api.request("GET", f"/v1/images/detail?{at_cap}&one=more")
    assert resp.status == 400, resp
    assert "query_params_max" in resp.text


# -- JSON bodies ------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"memberships": [' + b"[" * (depth - 2) + b"]" * (depth - 2) + b"]}"


def test_json_at_the_depth_limit_is_parsed(api: Api, image: str) -> None:
    body = b'{"memberships": [{"member_id": "p-deep", "can_share": [[[[[true]]]]]}]}'
    assert api.replace_members(image, body).status == 204
    assert api.members(image).json()["members"] == [{"member_id": "p-deep", "can_share": True}]
    resp = api.replace_members(image, _nested(JSON_DEPTH_MAX))
    assert resp.status == 400, resp  # parsed (not too deep), then refused as a bad shape
    assert "json_depth_max" not in resp.text


@pytest.mark.parametrize("depth", [JSON_DEPTH_MAX + 1, 1000, 30_000])
def test_json_nested_too_deep_is_a_400(api: Api, image: str, depth: int) -> None:
    body = _nested(depth)  # 1000 and more: deeper than the parser's recursion can go
    assert len(body) <= JSON_BODY_MAX
    for resp in (
        api.replace_members(image, body),
        api.add_member(image, "p-x", body),
    ):
        assert resp.status == 400, resp
        assert "json_depth_max" in resp.text


def test_brackets_inside_strings_do_not_count(api: Api, image: str) -> None:
    member = '[[[[{{{{\\"[[[[' * 4
    body = ('{"memberships": [{"member_id": "' + member + '"}]}').encode()
    assert api.replace_members(image, body).status == 204
    assert api.members(image).json()["members"][0]["member_id"] == member.replace("\\", "")


def test_json_body_size_cap(api: Api, image: str) -> None:
    padding = " " * (JSON_BODY_MAX - 40)
    fits = ('{"memberships": []' + padding + "}").encode()
    assert len(fits) <= JSON_BODY_MAX
    assert api.replace_members(image, fits).status == 204
    deep_and_large = b"[" * (JSON_BODY_MAX + 1)
    resp = api.replace_members(image, deep_and_large)
    assert resp.status == 413, resp
    assert "json_body_max" in resp.text
    chunks = [b'{"memberships": [', *[b" " * 4096] * (JSON_BODY_MAX // 4096), b"]}"]
    path = f"/v1/images/{image}/members"  # chunked: no Content-Length to refuse early
    resp = api.request("PUT", path, {"Content-Type": "application/json"}, chunks)
    assert resp.status == 413, resp
    assert "json_body_max" in resp.text


# -- values a header cannot carry ---------------------------------------------------------


def test_text_a_header_cannot_carry_is_sent_percent_encoded(api: Api) -> None:
    """v2's JSON may set any text; v1 answers in headers, which cannot hold a newline or
    another control character: such a value is percent-encoded there (before, the answer
    was aborted), and kept as it is in the JSON records."""
    body = {"name": "two\nlines", "disk_format": "raw", "container_format": "bare"}
    body["note"] = "a\r\nb\x01\tc"
    created = api.request(
        "POST", "/v2/images", {"Content-Type": "application/json"}, json.dumps(body).encode()
    )
    assert created.status == 201, created
    image_id = created.json()["id"]
    octets = {"Content-Type": "application/octet-stream"}
    assert api.request("PUT", f"/v2/images/{image_id}/file", octets, b"data").status == 204

    head = api.head(image_id)
    assert head.status == 200, head
    assert head.meta["name"] == "two%0Alines"
    assert head.properties["note"] == "a%0D%0Ab%01%09c"
    got = api.request("GET", f"/v1/images/{image_id}")
    assert (got.status, got.body) == (200, b"data")
    assert (got.meta["name"], got.properties["note"]) == (head.meta["name"], "a%0D%0Ab%01%09c")
    (record,) = [i for i in api.detail(is_public="none").images if i["id"] == image_id]
    assert (record["name"], record["properties"]["note"]) == ("two\nlines", "a\r\nb\x01\tc")
