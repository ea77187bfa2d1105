"""Image records as the wire shows them: JSON detail/summary forms and HEAD/GET headers."""

from __future__ import annotations

from typing import Any, Final

from osimage import wire
from osimage.server.db.catalog import ImageRow

# (field, its header name as sent, how its value is rendered), in wire.EMITTED order
_EMITTED: Final = tuple(
    (name, (wire.PREFIX + name).lower().encode(), wire.FIELDS[name].render) for name in wire.EMITTED
)


def _core(row: ImageRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "size": row.size,
        "virtual_size": row.virtual_size,
        "checksum": row.checksum,
        "disk_format": row.disk_format,
        "container_format": row.container_format,
        "min_disk": row.min_disk,
        "min_ram": row.min_ram,
        "owner": row.owner,
        "is_public": bool(row.is_public),
        "protected": bool(row.protected),
        "deleted": bool(row.deleted),
        "created_at": wire.render_timestamp(row.created_at),
        "updated_at": wire.render_timestamp(row.updated_at),
        "deleted_at": wire.render_timestamp(row.deleted_at) if row.deleted_at else None,
    }


def detail(row: ImageRow) -> dict[str, Any]:
    """The 18-key detail form (§5.1); the location is never shown."""
    record = _core(row)
    record["properties"] = {} if row.deleted else dict(row.properties)
    return record


def summary(row: ImageRow) -> dict[str, Any]:
    """The summary form of `GET /v1/images` (§5.2)."""
    record = _core(row)
    return {key: record[key] for key in wire.SUMMARY_KEYS}


def etag(row: ImageRow) -> list[tuple[str, str]]:
    return [("etag", row.checksum)] if row.checksum else []


def headers(row: ImageRow) -> list[tuple[str, str]]:
    """HEAD/GET headers: non-null core fields, properties, ETag and the SHA-256 digest."""
    core = {key: value for key, value in _core(row).items() if key in wire.EMITTED}
    properties = {} if row.deleted else row.properties
    out = wire.encode(core, properties)
    out += etag(row)
    if row.sha256:
        out.append((wire.SHA256_HEADER, row.sha256))
    return out


def raw_headers(row: ImageRow, length: int) -> list[tuple[bytes, bytes]]:
    """`headers(row)` and a Content-Length of `length`, as ASGI header bytes (a HEAD's).

    The same pairs `http.raw_headers` makes of them, in one pass: this is a HEAD's
    largest share of our own work (issue 14).
    """
    core = _core(row)
    out = [
        (name, wire.header_value(render(value)).encode())
        for field, name, render in _EMITTED
        if (value := core[field]) is not None
    ]
    if not row.deleted and row.properties:
        out += [
            (name.lower().encode(), value.encode())
            for name, value in wire.encode({}, row.properties)
        ]
    if row.checksum:
        out.append((b"etag", row.checksum.encode()))
    if row.sha256:
        out.append((wire.SHA256_HEADER.encode(), row.sha256.encode()))
    out.append((b"content-length", str(length).encode()))
    return out


def head_text(row: ImageRow) -> str:
    """`raw_headers(row, ...)` but the Content-Length, as the image's record keeps them
    (`osimage.server.db.records`): names and values on lines of their own, alternately
    (neither holds a newline: see `wire.header_value`), so reading them back is one split."""
    return "\n".join(
        f"{name.decode()}\n{value.decode()}" for name, value in raw_headers(row, 0)[:-1]
    )


def stored_head(text: str, length: int) -> list[tuple[bytes, bytes]]:
    """The headers `head_text` kept and a Content-Length of `length`, as ASGI bytes."""
    parts = text.encode().split(b"\n") if text else []
    out = list(zip(parts[::2], parts[1::2], strict=True))
    out.append((b"content-length", str(length).encode()))
    return out
