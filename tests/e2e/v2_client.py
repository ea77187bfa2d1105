"""A raw Image API v2 client for the v2 API tests: JSON in, `Response` out."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable
from typing import Any

from tests.e2e.api_client import Api, Response

PATCH_21 = "application/openstack-images-v2.1-json-patch"
PATCH_20 = "application/openstack-images-v2.0-json-patch"
OCTETS = {"Content-Type": "application/octet-stream"}


class V2:
    """One identity's v2 calls against one server."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | Iterable[bytes] | None = None,
    ) -> Response:
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
            data = json.dumps(body).encode()
        return self.api.request(method, f"/v2/{path.lstrip('/')}", sent, data)

    def create(self, **fields: Any) -> dict[str, Any]:
        resp = self.call(
            "POST", "images", {"disk_format": "raw", "container_format": "bare", **fields}
        )
        assert resp.status == 201, resp
        image: dict[str, Any] = resp.json()
        return image

    def show(self, image_id: str) -> Response:
        return self.call("GET", f"images/{image_id}")

    def patch(self, image_id: str, ops: Any, media: str = PATCH_21) -> Response:
        return self.call(
            "PATCH",
            f"images/{image_id}",
            headers={"Content-Type": media},
            data=json.dumps(ops).encode(),
        )

    def upload(self, image_id: str, data: bytes | Iterable[bytes], **headers: str) -> Response:
        return self.call("PUT", f"images/{image_id}/file", headers={**OCTETS, **headers}, data=data)

    def download(self, image_id: str, **headers: str) -> Response:
        return self.call("GET", f"images/{image_id}/file", headers=headers)

    def list(self, query: str = "") -> Response:
        return self.call("GET", f"images?{query}" if query else "images")

    def ids(self, query: str = "") -> builtins.list[str]:
        resp = self.list(query)
        assert resp.status == 200, resp
        return [image["id"] for image in resp.json()["images"]]

    def active(self, data: bytes = b"data", **fields: Any) -> dict[str, Any]:
        image = self.create(**fields)
        resp = self.upload(image["id"], data)
        assert resp.status == 204, resp
        shown: dict[str, Any] = self.show(image["id"]).json()
        return shown
