"""The floor baseline: bare Starlette on uvicorn doing the work `osimage serve` must do for
the load benchmark's requests, with plain sqlite3 on the seeded server's database.

Every request reads the database (nothing is cached across requests) and answers what
osimage answers: for ``HEAD /v1/images/{id}`` the image row joined with its properties
as osimage's HEAD headers, for ``GET /v1/images/detail`` the first page of the newest
live public images as their stored v1 records, read through the same index in the same
order. What osimage does beyond that (policy, request ids, its own protocol guards) is
what the floor leaves out, so no server doing this work on this stack goes much faster.

    .venv/bin/python -m bench._floor_app PORT HTTP DATABASE

osimage is imported at start only, for the header names and how each field is rendered.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._bare_app import serve, versions
from osimage import wire

_HIDDEN = ("killed", "deleted", "pending_delete")
# RFC 9110 token characters: a property key outside them is escaped in the header name
_TOKEN = re.compile(r"[0-9A-Za-z!#$&'*+.^_`|~-]+")


def _timestamp(stored: str) -> str:
    return datetime.fromisoformat(stored).isoformat(timespec="microseconds")


def _flag(stored: int) -> str:
    return "True" if stored else "False"


def _renderer(kind: object) -> Callable[[Any], str]:
    if kind is wire.FLAG:
        return _flag
    if kind is wire.TIME:
        return _timestamp
    return str


# (column, its header name, how its stored value is rendered), in the order osimage sends them
_EMITTED = tuple(
    (name, (wire.PREFIX + name).encode(), _renderer(wire.FIELDS[name])) for name in wire.EMITTED
)
_IMAGE = (
    f"SELECT {', '.join(f'images.{name}' for name, _, _ in _EMITTED)}, images.sha256,"
    " image_properties.key, image_properties.value"
    " FROM images LEFT OUTER JOIN image_properties ON image_properties.image_id = images.id"
    " WHERE images.id = ? ORDER BY image_properties.id"
)
# osimage's first page of public images (catalog._records_statement for that shape)
_PAGE = (
    "SELECT image_records.v1, image_records.updated_at = images.updated_at"
    " FROM images LEFT OUTER JOIN image_records ON image_records.image_id = images.id"
    " WHERE images.is_public = 1 AND images.deleted = 0"
    " AND images.status != ? AND images.status != ? AND images.status != ?"
    " ORDER BY images.created_at DESC, images.id DESC LIMIT ? OFFSET 0"
)
_AT = {name: index for index, (name, _, _) in enumerate(_EMITTED)}
_STATUS, _SIZE, _CHECKSUM, _DELETED = (_AT[n] for n in ("status", "size", "checksum", "deleted"))
_WIDTH = len(_EMITTED)  # then sha256, then a property's key and value
_PROPERTY = wire.PROPERTY_PREFIX
_SHA256 = wire.SHA256_HEADER.encode()


def _property_name(key: str) -> bytes:
    part = key if _TOKEN.fullmatch(key) else quote(key, safe="!#$&'*+-.^_`|~")
    return (_PROPERTY + part).lower().encode()


def create(database: str) -> Starlette:
    """The floor app on the SQLite database at `database`, read-only."""
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA query_only=1")

    async def image(request: Request) -> Response:
        rows = db.execute(_IMAGE, (request.path_params["image_id"],)).fetchall()
        if not rows:
            return Response(b"", status_code=404)
        first = rows[0]
        headers = [
            (name, render(value).encode())
            for (_, name, render), value in zip(_EMITTED, first, strict=False)
            if value is not None
        ]
        status, size, checksum = first[_STATUS], first[_SIZE], first[_CHECKSUM]
        deleted = first[_DELETED]
        if not deleted:
            headers += [
                (_property_name(key), value.encode())
                for *_, key, value in rows
                if key is not None and value is not None
            ]
        if checksum:
            headers.append((b"etag", checksum.encode()))
        if first[_WIDTH]:
            headers.append((_SHA256, first[_WIDTH].encode()))
        length = size or 0 if status == "active" and not deleted else 0
        headers.append((b"content-length", str(length).encode()))
        response = Response(b"")
        response.raw_headers = headers
        return response

    async def detail(request: Request) -> Response:
        limit = int(request.query_params.get("limit", "25"))
        rows = db.execute(_PAGE, (*_HIDDEN, limit)).fetchall()
        if not all(fresh for _, fresh in rows):
            return Response(b"a stale record: the floor renders none", status_code=500)
        body = f'{{"images": [{", ".join(record for record, _ in rows)}]}}'.encode()
        return Response(body, media_type="application/json")

    return Starlette(
        routes=[
            Route("/versions", versions),
            Route("/v1/images/detail", detail),
            Route("/v1/images/{image_id}", image, methods=["GET", "HEAD"]),
        ]
    )


if __name__ == "__main__":
    serve(create(sys.argv[3]), int(sys.argv[1]), sys.argv[2])
