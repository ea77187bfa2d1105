"""Property protections leak nothing through list filters (#11 item 8).

A filter on a property the caller may not read matches nothing, whatever the value, so
a caller cannot guess a protected value one filter at a time. Runs a real `osimage
serve` with `--property-protection-file` and token identities.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.api_client import Api, meta, props
from tests.support.server import Server, start_server

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
    base = tmp_path_factory.mktemp("protections")
    rules = Path(base) / "protections.conf"
    rules.write_text(RULES)
    srv = start_server(base, "--property-protection-file", str(rules), auth="tokens")
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def users(server: Server) -> dict[str, Api]:
    return {name: Api(server.url, f"{name}-token") for name in ("admin", "alice")}


@pytest.fixture(scope="module")
def image(users: dict[str, Api]) -> dict[str, Any]:
    """A public image with a protected key and a free one."""
    resp = users["admin"].create(
        {**meta(name="guarded", is_public=True), **props(x_secret_code="4242", colour="red")}
    )
    assert resp.status == 201, resp
    return resp.image


def _ids(api: Api, query: str) -> list[str]:
    for path in ("/v1/images", "/v1/images/detail"):
        resp = api.request("GET", f"{path}?{query}")
        assert resp.status == 200, resp
        ids = [entry["id"] for entry in resp.images]
        if path == "/v1/images":
            summary = ids
    assert ids == summary
    return ids


def test_a_reader_finds_the_image_by_a_protected_property(
    users: dict[str, Api], image: dict[str, Any]
) -> None:
    assert image["id"] in _ids(users["admin"], "property-x_secret_code=4242")
    assert image["id"] not in _ids(users["admin"], "property-x_secret_code=1111")


def test_a_filter_on_an_unreadable_property_matches_nothing(
    users: dict[str, Api], image: dict[str, Any]
) -> None:
    alice = users["alice"]
    assert image["id"] in _ids(alice, "property-colour=red")  # the image is visible to her
    for guess in ("4242", "1111", ""):
        assert _ids(alice, f"property-x_secret_code={guess}") == []
    assert _ids(alice, "property-colour=red&property-x_secret_code=4242") == []
    assert _ids(alice, "property-x_secret_other=anything") == []


def test_the_protected_value_is_not_shown_either(
    users: dict[str, Api], image: dict[str, Any]
) -> None:
    resp = users["alice"].request("GET", "/v1/images/detail?property-colour=red")
    found = [entry for entry in resp.images if entry["id"] == image["id"]]
    assert len(found) == 1
    assert found[0]["properties"] == {"colour": "red"}
