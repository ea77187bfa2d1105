"""Handlers for /v1/images, /v1/images/detail, /v1/images/{id} and its /file alias."""

from __future__ import annotations

import re

from osimage import wire
from osimage.server.api import render
from osimage.server.api.call import Call
from osimage.server.api.http import reply, reply_json, reply_ready_json, reply_stream
from osimage.server.downloads import DownloadBroken
from osimage.server.errors import BadRequest, MethodNotAllowed
from osimage.server.ingest import Upload
from osimage.server.service import Change

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_TOKEN = re.compile(r'[\x00-\x20\x7f()<>@,;:\\"/\[\]?={}]')
_BODY_ENCODINGS = frozenset({"chunked", "compress", "deflate", "gzip", "identity"})


def _not_allowed(allow: str, message: str = "The method is not allowed for this resource.") -> None:
    raise MethodNotAllowed(message, headers={"allow": allow})


def _upload(call: Call) -> Upload | None:
    """The image data the request carries, per §11.1, or None."""
    encoding = (call.header("transfer-encoding") or "").strip().lower()
    length_text = call.header("content-length")
    length: int | None = None
    if length_text is not None and length_text.strip():
        try:
            length = int(length_text.strip(), 10)
        except ValueError:
            raise BadRequest(f"Invalid Content-Length {length_text!r}") from None
    if encoding not in _BODY_ENCODINGS and not (length and length > 0):
        return None
    content_type = (call.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise BadRequest("Content-Type must be application/octet-stream")
    return call.upload_body(length)


def _check_servable(meta: wire.Metadata) -> None:
    """Refuse text that could not be written back as a header (§5.3 echoes it on HEAD/GET)."""
    for name, value in meta.fields.items():
        if isinstance(value, str) and _CONTROL.search(value):
            raise BadRequest(f"{wire.PREFIX}{name}: control characters are not allowed")
    for key, text in meta.properties.items():
        if _NOT_TOKEN.search(key):
            raise BadRequest(f"Property key {key!r} cannot be a header name")
        if text is not None and _CONTROL.search(text):
            raise BadRequest(f"{wire.PROPERTY_PREFIX}{key}: control characters are not allowed")


def _text(call: Call, name: str) -> str | None:
    """The UTF-8 text of the header `name`, or None; 400 when it is not UTF-8."""
    value = call.header(name)
    if value is None:
        return None
    try:
        return wire.header_text(value)
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: value is not valid UTF-8") from None


def _change(call: Call) -> Change:
    try:
        meta = wire.decode(call.headers.items())
    except wire.WireError as error:
        raise BadRequest(error.message) from None
    _check_servable(meta)
    change = Change(fields=meta.fields, properties=meta.properties)
    copy_from = _text(call, wire.COPY_FROM_HEADER)
    if copy_from is not None:
        change.copy_from = copy_from.strip()
    purge = _text(call, wire.PURGE_PROPS_HEADER)
    if purge is not None:
        change.purge = wire.parse_flag(purge)
    change.data = _upload(call)
    return change


async def collection(call: Call) -> None:
    """/v1/images (and its /v1/ alias)."""
    if call.method == "GET":
        rows = await call.service.list_images(call.context, call.query(), detail=False)
        await reply_json(call.send, 200, {"images": [render.summary(row) for row in rows]})
    elif call.method == "POST":
        row = call.service.shown(
            call.context, await call.service.create(call.context, _change(call))
        )
        location = f"{call.base_url}/v1/images/{row.id}"
        await reply_json(
            call.send,
            201,
            {"image": render.detail(row)},
            headers=[("location", location), *render.etag(row)],
        )
    else:
        _not_allowed("GET, POST")


async def detail(call: Call) -> None:
    """/v1/images/detail."""
    if call.method == "GET":
        records = await call.service.list_records(call.context, call.query())
        if records is not None:  # ready JSON: the page is a join (issue 14)
            await reply_ready_json(call.send, f'{{"images": [{", ".join(records)}]}}'.encode())
            return
        rows = await call.service.list_images(call.context, call.query(), detail=True)
        shown = [call.service.shown(call.context, row) for row in rows]
        await reply_json(call.send, 200, {"images": [render.detail(row) for row in shown]})
    elif call.method == "HEAD":
        _not_allowed("GET", "This operation is currently not permitted on Glance images details.")
    else:
        _not_allowed("GET, HEAD")


async def item(call: Call, image_id: str) -> None:
    """/v1/images/{id}."""
    service, context = call.service, call.context
    if call.method == "HEAD":
        row, stored = await service.head(context, image_id)
        # Content-Length is what a GET would send, so HEAD can size an external source.
        length = row.size or 0 if row.status == "active" and not row.deleted else 0
        if stored is not None:
            headers = render.stored_head(stored, length)
        else:
            headers = render.raw_headers(row, length)
        await call.send({"type": "http.response.start", "status": 200, "headers": headers})
        await call.send({"type": "http.response.body", "body": b""})
    elif call.method == "GET":
        await _download(call, image_id)
    elif call.method == "PUT":
        row = service.shown(context, await service.update(context, image_id, _change(call)))
        await reply_json(call.send, 200, {"image": render.detail(row)}, headers=render.etag(row))
    elif call.method == "DELETE":
        await service.delete(context, image_id)
        await reply(call.send, 200)
    else:
        _not_allowed("GET, HEAD, PUT, DELETE")


async def data(call: Call, image_id: str) -> None:
    """/v1/images/{id}/file: an osimage extension, the v1 download under v2's URL.

    openstacksdk's v1 proxy downloads from here; real v1 has no such route (404), and
    no v1 client asks for it, so answering changes nothing for them.
    """
    if call.method == "GET":
        await _download(call, image_id)
    else:
        _not_allowed("GET")


async def _download(call: Call, image_id: str) -> None:
    row, chunks = await call.service.download(call.context, image_id)
    row = call.service.shown(call.context, row)
    first = await anext(chunks, b"")  # store errors become answers before any byte is sent
    headers = [
        *render.headers(row),
        ("content-type", "application/octet-stream"),
        ("content-length", str(row.size or 0)),
    ]
    try:
        await reply_stream(
            call.send, 200, chunks, headers=headers, receive=call.receive, first=first
        )
    except* DownloadBroken:
        pass  # logged; returning with the body short makes the server drop the connection
