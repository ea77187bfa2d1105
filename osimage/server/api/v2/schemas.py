"""The JSON schemas of `/v2/schemas/*` (v2 §12); python-glanceclient validates against them."""

from __future__ import annotations

from typing import Any

from osimage import wire
from osimage.server.v2.schema import UUID_PATTERN

_STATUSES = [
    "queued", "saving", "active", "killed", "deleted", "uploading", "importing",
    "pending_delete", "deactivated",
]  # fmt: skip


def _read_only(kind: Any, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "readOnly": True, **extra}


def image() -> dict[str, Any]:
    nullable_text = ["null", "string"]
    properties: dict[str, Any] = {
        "id": {
            "type": "string",
            "pattern": UUID_PATTERN,
            "description": "An identifier for the image",
        },
        "name": {"type": nullable_text, "maxLength": 255},
        "status": _read_only("string", enum=_STATUSES),
        "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
        "protected": {"type": "boolean"},
        "os_hidden": {"type": "boolean"},
        "checksum": _read_only(nullable_text, maxLength=32),
        "os_hash_algo": _read_only(nullable_text, maxLength=64),
        "os_hash_value": _read_only(nullable_text, maxLength=128),
        "owner": {"type": nullable_text, "maxLength": 255},
        "size": _read_only(["null", "integer"]),
        "virtual_size": _read_only(["null", "integer"]),
        "container_format": {"type": nullable_text, "enum": [None, *wire.CONTAINER_FORMATS]},
        "disk_format": {"type": nullable_text, "enum": [None, *wire.DISK_FORMATS]},
        "created_at": _read_only("string"),
        "updated_at": _read_only("string"),
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        "direct_url": _read_only("string"),
        "min_ram": {"type": "integer"},
        "min_disk": {"type": "integer"},
        "self": _read_only("string"),
        "file": _read_only("string"),
        "schema": _read_only("string"),
        "locations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "maxLength": 255},
                    "metadata": {"type": "object"},
                },
                "required": ["url", "metadata"],
            },
        },
        # the deployment file's properties (§12.2), as Glance ships it
        "kernel_id": {"type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": False},
        "ramdisk_id": {"type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": False},
        "instance_uuid": {"type": "string", "is_base": False},
        "architecture": {"type": "string", "is_base": False},
        "os_distro": {"type": "string", "is_base": False},
        "os_version": {"type": "string", "is_base": False},
        "description": {"type": "string", "is_base": False},
    }
    return {
        "name": "image",
        "properties": properties,
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def images() -> dict[str, Any]:
    return {
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image()},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def member() -> dict[str, Any]:
    return {
        "name": "member",
        "properties": {
            "member_id": {"type": "string", "description": "An identifier for the image member"},
            "image_id": {"type": "string", "pattern": UUID_PATTERN, "description": "An image"},
            "created_at": {"type": "string", "description": "When the member was created"},
            "updated_at": {"type": "string", "description": "When the member was updated"},
            "status": {
                "type": "string",
                "enum": ["pending", "accepted", "rejected"],
                "description": "The status of this image member",
            },
            "schema": {"readOnly": True, "type": "string"},
        },
    }


def members() -> dict[str, Any]:
    return {
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    }


SCHEMAS = {"image": image, "images": images, "member": member, "members": members}
