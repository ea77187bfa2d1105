"""Images and members as v2 shows them: flat JSON with properties at the top level (§4.1)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from osimage.server.db.catalog import ImageRow, MemberRow

if TYPE_CHECKING:  # the stored records (db.records) render with this module too
    from osimage.server.v2.access import ImageView

_NULLABLE_PROPERTIES = ("kernel_id", "ramdisk_id")  # schema-image.json keeps their null


def timestamp(when: datetime | None) -> str | None:
    """`YYYY-MM-DDThh:mm:ssZ`: whole seconds, UTC (v2 §1.2)."""
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def image(view: ImageView) -> dict[str, Any]:
    return record(view.row, view.tags)


def record(row: ImageRow, tags: Sequence[str]) -> dict[str, Any]:
    """The image as v2 shows it; the same for every caller (the links are paths), so
    `osimage.server.db.records` stores it as JSON text."""
    shown: dict[str, Any] = {}
    for key, value in row.properties.items():  # a v1 null property reads as "" (§4.1)
        shown[key] = value if value is not None or key in _NULLABLE_PROPERTIES else ""
    shown.update(
        {
            "id": row.id,
            "name": row.name,
            "status": row.status,
            "visibility": row.visibility,
            "protected": bool(row.protected),
            "os_hidden": bool(row.os_hidden),
            "checksum": row.checksum,
            "os_hash_algo": row.os_hash_algo,
            "os_hash_value": row.os_hash_value,
            "owner": row.owner,
            "size": row.size,
            "virtual_size": row.virtual_size,
            "container_format": row.container_format,
            "disk_format": row.disk_format,
            "created_at": timestamp(row.created_at),
            "updated_at": timestamp(row.updated_at),
            "tags": list(tags),
            "min_ram": row.min_ram,
            "min_disk": row.min_disk,
            "self": f"/v2/images/{row.id}",
            "file": f"/v2/images/{row.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return shown


def member(entry: MemberRow) -> dict[str, Any]:
    return {
        "member_id": entry.member,
        "image_id": entry.image_id,
        "status": entry.status,
        "created_at": timestamp(entry.created_at),
        "updated_at": timestamp(entry.updated_at),
        "schema": "/v2/schemas/member",
    }
