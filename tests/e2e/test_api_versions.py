"""Spec §2: version discovery and URL versioning."""

from __future__ import annotations

import pytest

from tests.e2e.api_client import Api, Response

pytestmark = pytest.mark.e2e


def _check_versions_document(resp: Response, api: Api) -> None:
    assert resp.content_type.startswith("application/json")
    versions = resp.json()["versions"]
    assert [v["id"] for v in versions] == ["v1.1", "v1.0"]  # v1-only: no v2 entries
    for version in versions:
        assert set(version) == {"id", "status", "links"}
        assert version["status"] == "DEPRECATED"
        assert len(version["links"]) == 1
        link = version["links"][0]
        assert set(link) == {"rel", "href"}
        assert link["rel"] == "self"
        assert link["href"] == f"http://{api.host}:{api.port}/v1/"


def test_get_versions_is_200_with_the_document(api: Api) -> None:
    resp = api.request("GET", "/versions")
    assert resp.status == 200, resp
    _check_versions_document(resp, api)


@pytest.mark.parametrize(("method", "path"), [("POST", "/versions"), ("GET", "/versions/x/y")])
def test_any_method_and_sub_path_below_versions_is_200(api: Api, method: str, path: str) -> None:
    resp = api.request(method, path)
    assert resp.status == 200, resp
    _check_versions_document(resp, api)


@pytest.mark.parametrize("path", ["/", "/v3/images", "/foo", "/v2/images"])
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
