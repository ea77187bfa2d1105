"""Raw HTTP for the server e2e tests: `http.client`, so tests see the bytes the server sends."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from osimage import wire
from tests.support.server import Server

FIVE_KIB = b"*" * 5120
FIVE_KIB_MD5 = "c2e5db72bd7fd153f53ede5da5a06de3"
OCTETS = ("Content-Type", "application/octet-stream")
FORMATS = (("x-image-meta-disk_format", "raw"), ("x-image-meta-container_format", "ovf"))


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def text_header(self, name: str) -> str | None:
        """A header value as the UTF-8 text its raw bytes carry."""
        value = self.header(name)
        return None if value is None else value.encode("latin-1").decode("utf-8")

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def image(self) -> dict[str, Any]:
        image: dict[str, Any] = self.json["image"]
        return image


def call(
    server: Server,
    method: str,
    path: str,
    headers: Iterable[tuple[str, str | bytes]] = (),
    body: bytes | Iterable[bytes] | None = None,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        sent = [name.lower() for name, _ in headers]
        for name, value in headers:
            conn.putheader(name, value)
        if isinstance(body, bytes):
            conn.putheader("Content-Length", str(len(body)))
        elif body is not None:
            conn.putheader("Transfer-Encoding", "chunked")
        elif method in ("POST", "PUT") and "content-length" not in sent:
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        if isinstance(body, bytes):
            conn.send(body)
        elif body is not None:
            for chunk in body:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def create(server: Server, *headers: tuple[str, str | bytes], data: bytes | None = None) -> Reply:
    extra = [OCTETS] if data is not None else []
    return call(server, "POST", "/v1/images", [*headers, *extra], data)


def meta(**fields: object) -> list[tuple[str, str]]:
    return wire.encode(fields)


def names(reply: Reply) -> list[str]:
    assert reply.status == 200, reply
    return [image["name"] for image in reply.json["images"]]


def as_user(token: str, *headers: tuple[str, str | bytes]) -> list[tuple[str, str | bytes]]:
    return [("X-Auth-Token", token), *headers]
