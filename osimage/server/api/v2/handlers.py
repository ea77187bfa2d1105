"""Handlers for every /v2 route: decode the request, call `ImagesV2`, encode the answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any
from urllib.parse import quote_plus, urlencode

from osimage import wire
from osimage.server.api.call import Call
from osimage.server.api.http import reply, reply_json, reply_ready_json, reply_stream
from osimage.server.api.v2 import render, schemas
from osimage.server.downloads import DownloadBroken
from osimage.server.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    RangeNotSatisfiable,
    UnsupportedMediaType,
)
from osimage.server.ingest import Upload
from osimage.server.v2 import ImagesV2, Patch
from osimage.server.v2.schema import IMPORT_METHODS

PATCH_TYPES = (
    "application/openstack-images-v2.0-json-patch",
    "application/openstack-images-v2.1-json-patch",
)
_BODY_ENCODINGS = frozenset({"chunked", "compress", "deflate", "gzip", "identity"})
_OPS = ("add", "remove", "replace")


def not_allowed(allow: str) -> None:
    raise MethodNotAllowed("The method is not allowed for this resource.", headers={"allow": allow})


def _has_body(call: Call) -> bool:
    length = (call.header("content-length") or "").strip()
    if length.isdigit() and int(length) > 0:
        return True
    encoding = (call.header("transfer-encoding") or "").strip().lower()
    return encoding in _BODY_ENCODINGS and call.method in ("POST", "PUT", "PATCH")


async def no_body(call: Call) -> None:
    """Routes that take no body answer 400 to one (v2 §1.1)."""
    if _has_body(call):
        raise BadRequest("A body is not expected with this request.")


async def json_body(call: Call) -> Any:
    body = await call.json() if _has_body(call) else None
    if body is None:
        raise BadRequest("Body expected in request.")
    if not isinstance(body, dict | list):
        raise BadRequest("Unexpected body type. Expected list/dict.")
    return body


def _pairs(call: Call) -> list[tuple[str, str]]:
    """The query's pairs in order, with Glance's answer to text that is not UTF-8."""
    return call.query_pairs(
        undecodable="Error decoding your request. Either the URL or the request body "
        "contained characters that could not be decoded by Glance",
        strict=True,
    )


def _upload(call: Call) -> Upload:
    content_type = (call.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise UnsupportedMediaType(f"Invalid content type {content_type or None}")
    length: int | None = None
    for name in ("x-openstack-image-size", "content-length"):
        text = call.header(name)
        if text is not None and text.strip():
            try:
                length = wire.parse_decimal(text)
            except ValueError:
                raise BadRequest(
                    f"Invalid or missing image size in request headers ({name}: {text!r})."
                ) from None
            break
    return call.upload_body(length)


# -- images ----------------------------------------------------------------------------------


async def images(call: Call, v2: ImagesV2) -> None:
    """/v2/images."""
    if call.method == "GET":
        pairs = _pairs(call)
        records = await v2.list_records(call.context, pairs)
        if records is not None:  # ready JSON: the page is a join (issues 12, 14)
            await reply_ready_json(call.send, _page(v2, pairs, records))
            return
        found = await v2.list_images(call.context, pairs)
        document = {
            "images": [render.image(v2.shown(call.context, view)) for view in found],
            **_links(v2, pairs, [view.row.id for view in found]),
        }
        await reply_json(call.send, 200, document)
    elif call.method == "POST":
        view = await v2.create(call.context, await json_body(call))
        headers = [
            ("location", f"{call.base_url}/v2/images/{view.row.id}"),
            ("openstack-image-import-methods", ",".join(IMPORT_METHODS)),
        ]
        body = render.image(v2.shown(call.context, view))
        await reply_json(call.send, 201, body, headers=headers)
    else:
        not_allowed("GET, POST")


@dataclass(frozen=True)
class _Links:
    """A list query's links, built once per query (`_links_of`): `first`, and `next`
    before its marker's quoted id, as text and as the JSON `json.dumps` writes."""

    first: str
    next_head: str
    tail: str  # `, "schema": ..., "first": ...` of the page document
    next_json_head: str  # `, "next": "...marker=` (the quoted id and `"` follow)


@lru_cache(maxsize=256)
def _links_of(kept: tuple[tuple[str, str], ...]) -> _Links:
    query = urlencode(kept)
    first = "/v2/images" + (f"?{query}" if kept else "")
    next_head = "/v2/images?" + (f"{query}&" if kept else "") + "marker="
    tail = f', "schema": "/v2/schemas/images", "first": {json.dumps(first)}'
    # a quoted id is plain ASCII JSON keeps as is: the head's JSON, open, takes it
    return _Links(first, next_head, tail, f', "next": {json.dumps(next_head)[:-1]}')


def _page_links(
    v2: ImagesV2, pairs: list[tuple[str, str]], count: int, last: str
) -> tuple[_Links, str]:
    """The query's links and, when the page (`count` images, the last `last`) is full,
    the next page's quoted marker."""
    links = _links_of(tuple((k, v) for k, v in pairs if k != "marker"))
    limit = v2.limits.limit_param_default
    for name, value in pairs:
        if name == "limit" and value.strip().isdigit():
            limit = min(int(value), v2.limits.api_limit_max)
    marker = quote_plus(last) if count and count == limit else ""
    return links, marker


def _links(v2: ImagesV2, pairs: list[tuple[str, str]], ids: list[str]) -> dict[str, str]:
    """The list document's keys after `images`, for a page of images `ids`."""
    links, marker = _page_links(v2, pairs, len(ids), ids[-1] if ids else "")
    document = {"schema": "/v2/schemas/images", "first": links.first}
    if marker:
        document["next"] = links.next_head + marker
    return document


def _page(v2: ImagesV2, pairs: list[tuple[str, str]], records: list[tuple[str, str]]) -> bytes:
    """The list document as `json.dumps` writes it, the images' records joined in."""
    links, marker = _page_links(v2, pairs, len(records), records[-1][0] if records else "")
    tail = links.tail + (f'{links.next_json_head}{marker}"' if marker else "")
    return f'{{"images": [{", ".join(record for _, record in records)}]{tail}}}'.encode()


async def image(call: Call, v2: ImagesV2, image_id: str) -> None:
    """/v2/images/{id}."""
    if call.method == "GET":
        await no_body(call)
        record = await v2.show_record(call.context, image_id)
        if record is not None:  # ready JSON (issue 12)
            await reply_ready_json(call.send, record.encode())
            return
        view = await v2.show(call.context, image_id)
        await reply_json(call.send, 200, render.image(v2.shown(call.context, view)))
    elif call.method == "PATCH":
        patches = await _patches(call)
        view = await v2.update(call.context, image_id, patches)
        await reply_json(call.send, 200, render.image(v2.shown(call.context, view)))
    elif call.method == "DELETE":
        await no_body(call)
        await v2.delete(call.context, image_id)
        await reply(call.send, 204)
    else:
        not_allowed("GET, PATCH, DELETE")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise BadRequest(f'Pointer `{path}` does not start with "/".')
    if not path.startswith("/"):
        raise BadRequest(f'Pointer `{path}` does not start with "/".')
    if "//" in path:
        raise BadRequest(f'Pointer `{path}` contains adjacent "/".')
    if len(path) > 1 and path.endswith("/"):
        raise BadRequest(f'Pointer `{path}` end with "/".')
    tokens = []
    for token in path[1:].split("/"):
        index = token.find("~")
        while index != -1:
            if token[index + 1 : index + 2] not in ("0", "1"):
                raise BadRequest(
                    f'Pointer `{path}` contains "~" not part of a recognized escape sequence.'
                )
            index = token.find("~", index + 2)
        tokens.append(token.replace("~1", "/").replace("~0", "~").strip())
    return tokens


def _operation(raw: Any, legacy: bool) -> Patch:
    if not isinstance(raw, dict):
        raise BadRequest("Operations must be JSON objects.")
    if legacy:
        named = [op for op in _OPS if op in raw]
        if len(named) != 1:
            raise BadRequest(
                'Operation objects must contain exactly one member named "add", "remove", '
                'or "replace".'
            )
        op, path = named[0], raw[named[0]]
    else:
        if "op" not in raw:
            raise BadRequest(
                "Unable to find `op` in JSON Schema change. It must be one of the following: "
                "add, remove, replace."
            )
        op = raw["op"]
        if op not in _OPS:
            raise BadRequest(
                f"Invalid operation: `{op}`. It must be one of the following: add, remove, replace."
            )
        if "path" not in raw:
            raise BadRequest("Unable to find 'path' in JSON Schema change")
        path = raw["path"]
    tokens = _pointer(path)
    if tokens and tokens[0] == "locations":
        from osimage.server.errors import Forbidden

        raise Forbidden(
            "It's not allowed to update/add/remove locations if locations are invisible."
        )
    if len(tokens) != 1:
        raise BadRequest(f"Invalid JSON pointer for this resource: '/{'/'.join(tokens)}'")
    if op != "remove" and "value" not in raw:
        raise BadRequest(f'Operation "{op}" requires a member named "value".')
    return Patch(op=op, key=tokens[0], value=raw.get("value"), legacy=legacy)


async def _patches(call: Call) -> list[Patch]:
    media = (call.header("content-type") or "").split(";")[0].strip().lower()
    if media not in PATCH_TYPES:
        raise UnsupportedMediaType(
            f"Image PATCH expects Content-Type one of: {', '.join(PATCH_TYPES)}",
            headers={"accept-patch": ", ".join(PATCH_TYPES)},
        )
    body = await json_body(call)
    if not isinstance(body, list):
        raise BadRequest("Request body must be a JSON array of operation objects.")
    legacy = media == PATCH_TYPES[0]
    return [_operation(raw, legacy) for raw in body]


async def action(call: Call, v2: ImagesV2, image_id: str, name: str) -> None:
    """/v2/images/{id}/actions/deactivate|reactivate."""
    if name not in ("deactivate", "reactivate"):
        raise NotFound("The resource could not be found.")
    if call.method != "POST":
        not_allowed("POST")
    await no_body(call)
    await v2.set_active(call.context, image_id, active=name == "reactivate")
    await reply(call.send, 204)


async def tag(call: Call, v2: ImagesV2, image_id: str, value: str) -> None:
    """/v2/images/{id}/tags/{tag}."""
    if call.method == "PUT":
        await no_body(call)
        await v2.add_tag(call.context, image_id, value)
    elif call.method == "DELETE":
        await no_body(call)
        await v2.remove_tag(call.context, image_id, value)
    else:
        not_allowed("PUT, DELETE")
    await reply(call.send, 204)


# -- data ------------------------------------------------------------------------------------


async def file(call: Call, v2: ImagesV2, image_id: str) -> None:
    """/v2/images/{id}/file."""
    if call.method == "PUT":
        await v2.upload(call.context, image_id, _upload(call))
        await reply(call.send, 204)
    elif call.method == "GET":
        await no_body(call)
        await _download(call, v2, image_id)
    else:
        not_allowed("GET, PUT")


def _range(text: str, size: int) -> tuple[int, int]:
    """`bytes=a-b` / `a-` / `-n` -> inclusive (first, last) within `size` (v2 §9.2)."""
    unit, _, spec = text.strip().partition("=")
    if "," in spec:
        raise BadRequest(
            "Requests with multiple ranges are not supported in Glance. You may make multiple "
            "single-range requests instead."
        )
    first_text, dash, last_text = spec.strip().partition("-")
    try:
        if unit.strip().lower() != "bytes" or not dash:
            raise ValueError
        if first_text == "":
            count = int(last_text)
            if count <= 0:
                raise ValueError
            first, last = max(size - count, 0), size - 1
        else:
            first = int(first_text)
            last = int(last_text) if last_text else max(size - 1, first)
            if last < first:
                raise ValueError
    except ValueError:
        raise RangeNotSatisfiable("Invalid Range header.") from None
    if first >= size:
        raise RangeNotSatisfiable(
            "Invalid start position in Range header. "
            "Start position MUST be in range [0, image_size - 1]"
        )
    return first, min(last, size - 1)


async def _download(call: Call, v2: ImagesV2, image_id: str) -> None:
    wanted = call.header("range") or call.header("content-range")
    if wanted is not None and call.header("range") is None:  # pre-Pike: a request Content-Range
        wanted = "bytes=" + wanted.strip().removeprefix("bytes").strip().split("/")[0]
    span = None if wanted is None else partial(_range, wanted)
    row, chunks, bounds = await v2.download(call.context, image_id, span=span)
    if chunks is None:
        await reply(call.send, 204)
        return
    size = row.size or 0
    status = 200
    headers = [("content-type", "application/octet-stream")]
    if row.checksum:
        headers.append(("content-md5", row.checksum))
    if bounds is not None:
        first, last = bounds
        status = 206
        headers += [
            ("content-range", f"bytes {first}-{last}/{size}"),
            ("content-length", str(last - first + 1)),
        ]
    else:
        headers.append(("content-length", str(size)))
    head = await anext(chunks, b"")  # store errors become answers before any byte is sent
    try:
        await reply_stream(
            call.send, status, chunks, headers=headers, receive=call.receive, first=head
        )
    except* DownloadBroken:
        pass  # logged; returning with the body short makes the server drop the connection


async def stage(call: Call, v2: ImagesV2, image_id: str) -> None:
    """/v2/images/{id}/stage."""
    if call.method != "PUT":
        not_allowed("PUT")
    await v2.stage(call.context, image_id, _upload(call))
    await reply(call.send, 204)


async def import_(call: Call, v2: ImagesV2, image_id: str) -> None:
    """/v2/images/{id}/import."""
    if call.method != "POST":
        not_allowed("POST")
    await v2.start_import(call.context, image_id, await json_body(call))
    await reply(call.send, 202)


# -- members ---------------------------------------------------------------------------------


async def members(call: Call, v2: ImagesV2, image_id: str) -> None:
    """/v2/images/{id}/members."""
    if call.method == "GET":
        await no_body(call)
        found = await v2.members(call.context, image_id)
        document = {"members": [render.member(m) for m in found], "schema": "/v2/schemas/members"}
        await reply_json(call.send, 200, document)
    elif call.method == "POST":
        entry = await v2.add_member(call.context, image_id, await json_body(call))
        await reply_json(call.send, 200, render.member(entry))
    else:
        not_allowed("GET, POST")


async def member(call: Call, v2: ImagesV2, image_id: str, member_id: str) -> None:
    """/v2/images/{id}/members/{member}."""
    if call.method == "GET":
        await no_body(call)
        entry = await v2.member(call.context, image_id, member_id)
        await reply_json(call.send, 200, render.member(entry))
    elif call.method == "PUT":
        body = await json_body(call)
        entry = await v2.set_member_status(call.context, image_id, member_id, body)
        await reply_json(call.send, 200, render.member(entry))
    elif call.method == "DELETE":
        await no_body(call)
        await v2.remove_member(call.context, image_id, member_id)
        await reply(call.send, 204)
    else:
        not_allowed("GET, PUT, DELETE")


# -- schemas and info ------------------------------------------------------------------------


async def schema(call: Call, name: str) -> None:
    """/v2/schemas/{name}."""
    build = schemas.SCHEMAS.get(name)
    if build is None:
        raise NotFound("The resource could not be found.")
    if call.method != "GET":
        not_allowed("GET")
    await no_body(call)
    await reply_json(call.send, 200, build())


async def info(call: Call, name: str) -> None:
    """/v2/info/import and /v2/info/stores (a single store: 404, as Glance without
    `enabled_backends`)."""
    if name not in ("import", "stores"):
        raise NotFound("The resource could not be found.")
    if call.method != "GET":
        not_allowed("GET")
    await no_body(call)
    if name == "stores":
        raise NotFound("Multi backend is not supported at this site.")
    document = {
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": list(IMPORT_METHODS),
        }
    }
    await reply_json(call.send, 200, document)
