"""Spec §2: version discovery and URL versioning."""

from __future__ import annotations

import pytest

from tests.e2e.api_client import Api, Response

pytestmark = pytest.mark.e2e


V2_IDS = ["v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"]


def _check_versions_document(resp: Response, api: Api) -> None:
    """v2 entries first (one CURRENT, the rest SUPPORTED), then v1.1 and v1.0 DEPRECATED."""
    assert resp.content_type.startswith("application/json")
    versions = resp.json()["versions"]
    assert [v["id"] for v in versions] == [*V2_IDS, "v1.1", "v1.0"]
    statuses = {v["id"]: v["status"] for v in versions}
    assert [k for k, v in statuses.items() if v == "CURRENT"] == ["v2.9"]
    assert {statuses[k] for k in V2_IDS[1:]} == {"SUPPORTED"}
    assert statuses["v1.1"] == statuses["v1.0"] == "DEPRECATED"
    for version in versions:
        assert set(version) == {"id", "status", "links"}
        assert len(version["links"]) == 1
        link = version["links"][0]
        assert set(link) == {"rel", "href"}
        assert link["rel"] == "self"
        major = version["id"].split(".")[0]
        assert link["href"] == f"http://{api.host}:{api.port}/{major}/"


def test_get_versions_is_200_with_the_document(api: Api) -> None:
    resp = api.request("GET", "/versions")
    assert resp.status == 200, resp
    _check_versions_document(resp, api)


@pytest.mark.parametrize(("method", "path"), [("POST", "/versions"), ("GET", "/versions/x/y")])
def test_any_method_and_sub_path_below_versions_is_200(api: Api, method: str, path: str) -> None:
    resp = api.request(method, path)
    assert resp.status == 200, resp
    _check_versions_document(resp, api)


@pytest.mark.parametrize("path", ["/", "/v3/images", "/foo", "/v2.99/images", "/v2.8/images"])
def test_root_and_unknown_version_prefixes_are_300(api: Api, path: str) -> None:
    resp = api.request("GET", path)
    assert resp.status == 300, resp
    _check_versions_document(resp, api)


def test_get_v1_without_slash_is_a_version_document(api: Api) -> None:
    resp = api.request("GET", "/v1")
    assert resp.status in (200, 300), resp
    _check_versions_document(resp, api)


def test_get_v1_with_slash_is_the_summary_list(api: Api) -> None:
    api.reserve(name="alias-check", is_public=True)
    resp = api.request("GET", "/v1/")
    assert resp.status == 200, resp
    assert isinstance(resp.images, list)
    assert resp.images, "the summary list of a non-empty catalogue"
    assert set(resp.images[0]) == {
        "id",
        "name",
        "size",
        "disk_format",
        "container_format",
        "checksum",
    }


@pytest.mark.parametrize("prefix", ["/v1.0", "/v1.1"])
def test_v1_0_and_v1_1_prefixes_route_to_v1(api: Api, prefix: str) -> None:
    image = api.reserve(name="prefix-check")
    resp = api.request("HEAD", f"{prefix}/images/{image['id']}")
    assert resp.status == 200, resp
    assert resp.meta["id"] == image["id"]
    assert api.request("GET", f"{prefix}/images").status == 200


def test_media_type_versioning_routes_to_v1(api: Api) -> None:
    image = api.reserve(name="accept-versioned", is_public=True)
    resp = api.request("GET", "/images", {"Accept": "application/vnd.openstack.images-v1"})
    assert resp.status == 200, resp
    assert image["id"] in [i["id"] for i in resp.images]


def test_media_type_with_unknown_version_is_300(api: Api) -> None:
    resp = api.request("GET", "/images", {"Accept": "application/vnd.openstack.images-v9"})
    assert resp.status == 300, resp
    _check_versions_document(resp, api)


def test_version_discovery_needs_no_token(users: dict[str, Api]) -> None:
    anonymous = users["anonymous"]
    assert anonymous.request("GET", "/versions").status == 200
    assert anonymous.request("GET", "/").status == 300


def test_v1_needs_a_token_in_tokens_mode(users: dict[str, Api]) -> None:
    assert users["anonymous"].list().status == 401
    assert users["alice"].as_("no-such-token").list().status == 401
    assert users["alice"].list().status == 200


@pytest.mark.parametrize("prefix", ["/v2", "/v2.0", "/v2.6", "/v2.9"])
def test_v2_prefixes_route_to_v2(api: Api, prefix: str) -> None:
    resp = api.request("GET", f"{prefix}/images")
    assert resp.status == 200, resp
    assert resp.json()["schema"] == "/v2/schemas/images"


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_v2_has_no_root_route(api: Api, path: str) -> None:
    assert api.request("GET", path).status == 404


def test_media_type_versioning_routes_to_v2(api: Api) -> None:
    accept = {"Accept": "application/vnd.openstack.images-v2.6"}
    resp = api.request("GET", "/images", accept)
    assert resp.status == 200, resp
    assert resp.json()["schema"] == "/v2/schemas/images"  # a v2 list, not v1's


def test_keystoneauth_discovery_picks_v2(users: dict[str, Api]) -> None:
    """keystoneauth (what openstacksdk, OSC and Nova use) reads the root document and
    adopts the href of the newest v2.x; asked for v1, it still finds v1."""
    from keystoneauth1 import adapter, discover, session
    from keystoneauth1.token_endpoint import Token

    alice = users["alice"]
    url = f"http://{alice.host}:{alice.port}"
    sess = session.Session(auth=Token(url, "alice-token"))
    image = adapter.Adapter(
        sess, service_type="image", endpoint_override=url, min_version="2", max_version="2.latest"
    )
    data = image.get_endpoint_data()
    assert data is not None
    assert (data.api_version, data.url) == ((2, 9), f"{url}/v2/")
    found = discover.Discover(sess, url)
    assert found.url_for("2.0") == f"{url}/v2/"
    assert found.url_for("1.0") == f"{url}/v1/"
    assert sess.get(f"{data.url}images").status_code == 200  # the adopted href works
