"""What a v2 image body may hold (the image schema, spec v2 §5, §7): the attribute names
that are read-only, reserved or core, and each value's type and bounds.

Pure: each check answers by returning or by raising the `ApiError` the client gets.
"""

from __future__ import annotations

import re
from typing import Any, Final

from osimage import wire
from osimage.server import rules
from osimage.server.errors import BadRequest

MAX_INT = 2147483647
UUID_PATTERN: Final = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)
UUID = re.compile(UUID_PATTERN)
READ_ONLY: Final = frozenset(
    {
        "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "id",
        "direct_url", "self", "file", "schema", "os_hash_algo", "os_hash_value", "stores",
    }
)  # fmt: skip
LINKS: Final = ("direct_url", "self", "file", "schema", "stores")
RESERVED: Final = frozenset({"location", "deleted", "deleted_at", "locations"})
BASE: Final = (
    "name", "visibility", "protected", "os_hidden", "owner", "min_ram", "min_disk",
    "disk_format", "container_format", "tags",
)  # fmt: skip
UUID_PROPERTIES: Final = ("kernel_id", "ramdisk_id")  # schema-image.json: UUID or null
IMPORT_METHODS: Final = ("glance-direct", "web-download")


def schema_error(detail: str) -> BadRequest:
    return BadRequest(f"Provided object does not match schema 'image': {detail}")


def is_reserved(key: str) -> bool:
    """Keys no client may set: the locations and `os_glance*` (Glance's own)."""
    return key in RESERVED or key.startswith("os_glance")


def check_value(key: str, value: Any) -> None:
    """Validate one attribute value as the image schema does (400 on failure)."""
    if key in ("name", "owner"):
        if value is not None and not isinstance(value, str):
            raise schema_error(f"{value!r} is not of type 'null', 'string' ({key})")
        if isinstance(value, str) and len(value) > 255:
            raise schema_error(f"{key} is longer than 255 characters")
    elif key == "visibility":
        if value not in rules.VISIBILITIES:
            raise schema_error(f"{value!r} is not one of {list(rules.VISIBILITIES)} (visibility)")
    elif key in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise schema_error(f"{value!r} is not of type 'boolean' ({key})")
    elif key in ("min_ram", "min_disk"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise schema_error(f"{value!r} is not of type 'integer' ({key})")
        if value < 0:
            raise BadRequest(
                f"Invalid value '{value}' for parameter '{key}': Cannot be a negative value"
            )
        if value > MAX_INT:
            raise BadRequest(f"'{key}' value out of range, must not exceed {MAX_INT}.")
    elif key in ("disk_format", "container_format"):
        allowed = wire.DISK_FORMATS if key == "disk_format" else wire.CONTAINER_FORMATS
        if value is not None and value not in allowed:
            raise schema_error(f"{value!r} is not one of {[None, *allowed]} ({key})")
    elif key == "tags":
        if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
            raise schema_error(f"{value!r} is not an array of strings (tags)")
        for tag in value:
            if len(tag) > 255:
                raise schema_error(f"tag {tag[:32]!r}... is longer than 255 characters")
    elif key in UUID_PROPERTIES:
        if value is not None and not (isinstance(value, str) and UUID.match(value)):
            raise schema_error(f"{value!r} does not match the UUID pattern ({key})")
    else:
        if not isinstance(value, str):
            raise schema_error(f"{value!r} is not of type 'string' ({key})")
        if len(key) > 255:
            raise BadRequest("Custom property should not be greater than 255 characters.")


def unique(tags: list[str]) -> list[str]:
    """The tags without repeats, in their first order."""
    return list(dict.fromkeys(tags))
