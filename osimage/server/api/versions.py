"""Version discovery: the versions document (§2) and the v1 version document."""

from __future__ import annotations

from typing import Any

from osimage.server.api.http import Scope, Send, base_url, reply_json

V1_TOKENS = ("v1", "v1.0", "v1.1")
MEDIA_PREFIX = "application/vnd.openstack.images-"


def _entry(scope: Scope, version: str) -> dict[str, Any]:
    return {
        "id": version,
        "status": "DEPRECATED",
        "links": [{"rel": "self", "href": f"{base_url(scope)}/v1/"}],
    }


def versions_document(scope: Scope) -> dict[str, Any]:
    return {"versions": [_entry(scope, "v1.1"), _entry(scope, "v1.0")]}


async def send_versions(scope: Scope, send: Send, status: int) -> None:
    """The versions document: 200 on /versions, 300 everywhere else."""
    await reply_json(send, status, versions_document(scope), head=scope["method"] == "HEAD")


async def send_v1_version(scope: Scope, send: Send) -> None:
    """`GET /v1`: 200 with the versions document, so keystoneauth discovery on a `/v1`
    endpoint finds v1 (it reads a "versions" list as well as a single "version")."""
    await send_versions(scope, send, 200)
