"""Small helpers shared by the interop tests (no fixtures here)."""

from __future__ import annotations

import hashlib
import http.client
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import glanceclient

from osimage import wire
from tests.support.server import Server


@dataclass
class Target:
    """One server and the identity the clients use against it."""

    mode: str  # "noauth" or "tokens"
    server: Server
    token: str
    project: str | None  # the caller's project: images it creates get it as owner
    admin: bool

    @property
    def list_kwargs(self) -> dict[str, Any]:
        """What glanceclient needs to list the caller's own private images.

        A noauth caller is an admin without a project, to whom v1 lists only public
        images unless asked for ``is_public=None`` (``glance image-list --all-tenants``);
        a member of a project sees its own images anyway.
        """
        return {"is_public": None} if self.admin else {}

    def blob(self, image_id: str) -> Path:
        """Where the default filesystem store keeps an image's data."""
        return self.server.data_dir / "images" / image_id

    def glance(self, token: str | None = None) -> Any:
        """`glanceclient.Client('1', endpoint, token=...)`, the call shape v1 users write.

        glanceclient deprecates the version argument in favour of an endpoint ending in
        ``/v1`` (a test covers that form too); its warning is expected here.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`version` keyword", DeprecationWarning)
            return glanceclient.Client("1", self.server.url, token=token or self.token)


@dataclass
class Sources:
    """A loopback HTTP server handing out registered byte strings (GET and HEAD)."""

    base: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, data: bytes) -> str:
        self.blobs[f"/{name}"] = data
        return f"{self.base}/{name}"

    def fetches(self, name: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path == f"/{name}")


def unique(prefix: str = "interop") -> str:
    """A name no other test uses, so tests can share one server."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(size: int, seed: str) -> bytes:
    """`size` deterministic bytes that differ per `seed` (more than one 64 KiB chunk is fine)."""
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def poll(read: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Re-read until `done` holds; fails after 30 s so a hung copy cannot hang the suite."""
    deadline = time.monotonic() + 30
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}; last seen {value!r}")
        time.sleep(0.05)


def latin1_view(text: str) -> str:
    """What a client that decodes header bytes as latin-1 shows for UTF-8 `text`."""
    return text.encode("utf-8").decode("latin-1")


def head_metadata(url: str, image_id: str, token: str | None) -> wire.Metadata:
    """The image's metadata as the server's HEAD states it, decoded by the shared codec.

    A neutral reader for side-by-side comparisons: raw http.client, no client library.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        headers = {"X-Auth-Token": token} if token else {}
        conn.request("HEAD", f"/v1/images/{quote(image_id)}", headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, (resp.status, resp.reason)
        return wire.decode(resp.getheaders(), percent=False)  # the server writes raw UTF-8
    finally:
        conn.close()
