"""A tiny raw HTTP client for the API conformance suite.

It speaks plain HTTP/1.1 over `http.client`, independently of our SDK, so the suite
checks the server and nothing else: header values may be sent as raw bytes, bodies
as bytes or as a chunked iterable, and any method may be used. Header names are
built from the constants in `osimage.wire` where the spelling is not under test.
"""

from __future__ import annotations

import builtins
import hashlib
import http.client
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from osimage.wire import PREFIX, PROPERTY_PREFIX, PURGE_PROPS_HEADER, REQUEST_ID_HEADER

__all__ = [
    "PREFIX",
    "PROPERTY_PREFIX",
    "PURGE_PROPS_HEADER",
    "REQUEST_ID_HEADER",
    "Api",
    "Response",
    "md5",
    "meta",
    "props",
    "unique",
]

HeaderValue = str | bytes
Headers = Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]]
OCTETS = {"Content-Type": "application/octet-stream"}
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def meta(**fields: object) -> dict[str, str]:
    """``x-image-meta-<field>`` headers; bools render as True/False like the server does."""
    return {PREFIX + name: _text(value) for name, value in fields.items()}


def props(**properties: object) -> dict[str, str]:
    """``x-image-meta-property-<key>`` headers."""
    return {PROPERTY_PREFIX + key: _text(value) for key, value in properties.items()}


def _text(value: object) -> str:
    return str(value)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def unique(prefix: str = "img") -> str:
    """A name no other test uses, so tests can share one server."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Response:
    """A fully read response; header values are the text the server sent (UTF-8 decoded)."""

    status: int
    reason: str
    raw_headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.raw_headers:
            if key.lower() == name.lower():
                return _utf8(value)
        return None

    @property
    def content_type(self) -> str:
        return self.header("content-type") or ""

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.raw_headers}

    @property
    def meta(self) -> dict[str, str]:
        """Core ``x-image-meta-*`` headers by field name (property headers excluded)."""
        out: dict[str, str] = {}
        for key, value in self.raw_headers:
            name = key.lower()
            if name.startswith(PREFIX) and not name.startswith(PROPERTY_PREFIX):
                out[name[len(PREFIX) :]] = _utf8(value)
        return out

    @property
    def properties(self) -> dict[str, str]:
        """``x-image-meta-property-*`` headers by key."""
        out: dict[str, str] = {}
        for key, value in self.raw_headers:
            name = key.lower()
            if name.startswith(PROPERTY_PREFIX):
                out[name[len(PROPERTY_PREFIX) :]] = _utf8(value)
        return out

    @property
    def request_id(self) -> str | None:
        return self.header(REQUEST_ID_HEADER)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def image(self) -> dict[str, Any]:
        record = self.json()["image"]
        assert isinstance(record, dict)
        return record

    @property
    def images(self) -> list[dict[str, Any]]:
        records = self.json()["images"]
        assert isinstance(records, list)
        return records

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def allow(self) -> set[str]:
        value = self.header("allow") or ""
        return {part.strip().upper() for part in value.split(",") if part.strip()}

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:300]!r}>"


def _utf8(value: str) -> str:
    # http.client hands header bytes over as latin-1 text; the server writes UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


class Api:
    """Raw requests against one server, as one identity (`token`, or none)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token

    def as_(self, token: str | None) -> Api:
        return Api(f"http://{self.host}:{self.port}", token)

    def request(
        self,
        method: str,
        path: str,
        headers: Headers = (),
        body: bytes | Iterable[bytes] | None = None,
        *,
        params: Mapping[str, object] | None = None,
        auth: bool = True,
    ) -> Response:
        """Send one request and read the whole answer (tests use small bodies)."""
        if params:
            path = f"{path}?{urlencode({k: str(v) for k, v in params.items()})}"
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        names = {name.lower() for name, _ in items}
        if auth and self.token and "x-auth-token" not in names:
            items.append(("X-Auth-Token", self.token))
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in items:
                conn.putheader(name, value)
            chunked = False
            if isinstance(body, bytes):
                if "content-length" not in names:
                    conn.putheader("Content-Length", str(len(body)))
            elif body is not None and "transfer-encoding" not in names:
                conn.putheader("Transfer-Encoding", "chunked")
                chunked = True
            elif body is not None:
                chunked = True
            conn.endheaders()
            if isinstance(body, bytes):
                if body:
                    conn.send(body)
            elif body is not None:
                for chunk in body:
                    if chunk:
                        conn.send(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                if chunked:
                    conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.reason, list(resp.getheaders()), data)
        finally:
            conn.close()

    # -- images ------------------------------------------------------------------

    def create(
        self, headers: Headers = (), data: bytes | Iterable[bytes] | None = None
    ) -> Response:
        items = _items(headers)
        if data is not None and not any(k.lower() == "content-type" for k, _ in items):
            items = [*items, *OCTETS.items()]
        return self.request("POST", "/v1/images", items, data)

    def reserve(self, **fields: object) -> dict[str, Any]:
        """Create an image without data and return its record; fails the test unless 201."""
        resp = self.create(meta(**fields))
        assert resp.status == 201, resp
        return resp.image

    def upload(self, data: bytes, **fields: object) -> dict[str, Any]:
        """Create an active raw/bare image holding `data`; fails the test unless 201."""
        fields = {"disk_format": "raw", "container_format": "bare", **fields}
        resp = self.create(meta(**fields), data)
        assert resp.status == 201, resp
        return resp.image

    def head(self, image_id: str, headers: Headers = ()) -> Response:
        return self.request("HEAD", f"/v1/images/{image_id}", headers)

    def get(self, image_id: str, headers: Headers = ()) -> Response:
        return self.request("GET", f"/v1/images/{image_id}", headers)

    def update(
        self, image_id: str, headers: Headers = (), data: bytes | Iterable[bytes] | None = None
    ) -> Response:
        items = _items(headers)
        if data is not None and not any(k.lower() == "content-type" for k, _ in items):
            items = [*items, *OCTETS.items()]
        return self.request("PUT", f"/v1/images/{image_id}", items, data)

    def delete(self, image_id: str, headers: Headers = ()) -> Response:
        return self.request("DELETE", f"/v1/images/{image_id}", headers)

    def list(self, **params: object) -> Response:
        return self.request("GET", "/v1/images", params=params)

    def detail(self, **params: object) -> Response:
        return self.request("GET", "/v1/images/detail", params=params)

    def detail_ids(self, **params: object) -> builtins.list[str]:
        resp = self.detail(**params)
        assert resp.status == 200, resp
        return [image["id"] for image in resp.images]

    # -- members -----------------------------------------------------------------

    def members(self, image_id: str) -> Response:
        return self.request("GET", f"/v1/images/{image_id}/members")

    def add_member(self, image_id: str, member: str, body: object = None) -> Response:
        return self.request("PUT", f"/v1/images/{image_id}/members/{member}", *_json_body(body))

    def replace_members(self, image_id: str, body: object) -> Response:
        return self.request("PUT", f"/v1/images/{image_id}/members", *_json_body(body))

    def remove_member(self, image_id: str, member: str) -> Response:
        return self.request("DELETE", f"/v1/images/{image_id}/members/{member}")

    def shared_images(self, member: str, method: str = "GET") -> Response:
        return self.request(method, f"/v1/shared-images/{member}")


def _items(headers: Headers) -> list[tuple[str, HeaderValue]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _json_body(body: object) -> tuple[list[tuple[str, HeaderValue]], bytes | None]:
    if body is None:
        return [], None
    if isinstance(body, bytes):
        return [("Content-Type", "application/json")], body
    return [("Content-Type", "application/json")], json.dumps(body).encode()
