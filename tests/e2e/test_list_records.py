"""Issue 14: a v1 detail page is served from each image's stored record, which every
write must keep current. Each step changes the image one way, then its detail-list
entry must equal the record a GET of the image shows (the record rendered from its row).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.api_client import PURGE_PROPS_HEADER, Api, meta, props, unique

pytestmark = pytest.mark.e2e


def listed(api: Api, name: str) -> dict[str, Any]:
    """The image's entry in the detail list (any status)."""
    resp = api.detail(name=name, changes_since="2000-01-01T00:00:00")
    assert resp.status == 200, resp
    (entry,) = resp.images
    return entry


def test_every_write_shows_in_the_detail_list(api: Api) -> None:
    name = unique("records")
    image = api.reserve(name=name, is_public=True, **{"disk_format": "raw"})
    entry = listed(api, name)
    assert entry["status"] == "queued"
    assert entry["properties"] == {}

    resp = api.update(image["id"], {**props(colour="red", size_hint="s")})  # property add
    assert resp.status == 200, resp
    entry = listed(api, name)
    assert entry["properties"] == {"colour": "red", "size_hint": "s"}
    assert entry == resp.image

    resp = api.update(image["id"], {**props(colour="blue"), PURGE_PROPS_HEADER: "true"})
    assert resp.status == 200, resp  # purge: size_hint goes
    assert listed(api, name)["properties"] == {"colour": "blue"}
    assert listed(api, name) == resp.image

    resp = api.update(image["id"], meta(min_ram=512, container_format="bare"))  # core fields
    assert resp.status == 200, resp
    assert listed(api, name)["min_ram"] == 512
    assert listed(api, name) == resp.image

    resp = api.update(image["id"], data=b"some data")  # queued -> saving -> active
    assert resp.status == 200, resp
    entry = listed(api, name)
    assert (entry["status"], entry["size"]) == ("active", 9)
    assert entry["checksum"] == resp.image["checksum"] is not None
    assert entry == resp.image

    assert api.delete(image["id"]).status == 200
    resp = api.detail(name=name)
    assert resp.status == 200, resp
    assert resp.images == []
