"""Version discovery: the versions document (§2, v2 §2) and the v1 version document."""

from __future__ import annotations

from typing import Any

from osimage.server.api.http import Scope, Send, base_url, reply_json

V1_TOKENS = ("v1", "v1.0", "v1.1")
# What this server announces for v2 (docs/protocol.md): 2.0-2.7 and 2.9, the set current
# Glance serves without multi-store (2.8, 2.10-2.13) or a cache (2.14, 2.16, 2.18); 2.15
# and 2.17 are left out because their routes (stores detail, locations) are not served.
V2_VERSIONS = ("v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0")
V2_CURRENT = "v2.9"
V2_TOKENS = ("v2", *V2_VERSIONS)
# With --cache-dir: the cache API (2.14) and its 202 for PUT (2.16), as Glance with
# `image_cache_dir`; 2.18 (POST /v2/cache/clean, /prune) is not served.
V2_CACHE_VERSIONS = ("v2.16", "v2.14")
MEDIA_PREFIX = "application/vnd.openstack.images-"


def _entry(scope: Scope, version: str, status: str) -> dict[str, Any]:
    major = version.split(".")[0]
    return {
        "id": version,
        "status": status,
        "links": [{"rel": "self", "href": f"{base_url(scope)}/{major}/"}],
    }


def v2_tokens(*, cache: bool = False) -> tuple[str, ...]:
    """The path segments routed to v2: with a cache, v2.14 and v2.16 as well."""
    return (*V2_CACHE_VERSIONS, *V2_TOKENS) if cache else V2_TOKENS


def versions_document(scope: Scope, *, cache: bool = False) -> dict[str, Any]:
    """v2 entries first (CURRENT, then SUPPORTED, newest first), then v1 (DEPRECATED)."""
    versions = (*V2_CACHE_VERSIONS, *V2_VERSIONS) if cache else V2_VERSIONS
    current = V2_CACHE_VERSIONS[0] if cache else V2_CURRENT
    entries = [
        _entry(scope, version, "CURRENT" if version == current else "SUPPORTED")
        for version in versions
    ]
    entries += [_entry(scope, "v1.1", "DEPRECATED"), _entry(scope, "v1.0", "DEPRECATED")]
    return {"versions": entries}


async def send_versions(scope: Scope, send: Send, status: int, *, cache: bool = False) -> None:
    """The versions document: 200 on /versions, 300 everywhere else."""
    document = versions_document(scope, cache=cache)
    await reply_json(send, status, document, head=scope["method"] == "HEAD")


async def send_v1_version(scope: Scope, send: Send, *, cache: bool = False) -> None:
    """`GET /v1`: 200 with the versions document, so keystoneauth discovery on a `/v1`
    endpoint finds v1 (it reads a "versions" list as well as a single "version")."""
    await send_versions(scope, send, 200, cache=cache)
