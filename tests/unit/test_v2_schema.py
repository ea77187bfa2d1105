"""What a v2 image body may hold, without HTTP: each value's type and bounds, the reserved
keys, and tags without repeats. The wire-level answers stay in tests/e2e/test_v2_images.py."""

from __future__ import annotations

from typing import Any

import pytest

from osimage.server.errors import BadRequest
from osimage.server.v2 import schema


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", None),
        ("name", "n" * 255),
        ("visibility", "community"),
        ("protected", True),
        ("min_ram", 0),
        ("min_disk", schema.MAX_INT),
        ("disk_format", None),
        ("disk_format", "qcow2"),
        ("tags", ["a", "b"]),
        ("kernel_id", None),
        ("kernel_id", "0a6c2a3e-1111-4a4a-8b8b-0123456789ab"),
        ("colour", "red"),
    ],
)
def test_values_the_schema_accepts(key: str, value: Any) -> None:
    schema.check_value(key, value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("name", 5, r"^Provided object does not match schema 'image': 5 is not of type"),
        ("owner", "o" * 256, "owner is longer than 255 characters"),
        ("visibility", "everyone", "'everyone' is not one of"),
        ("os_hidden", "yes", "'yes' is not of type 'boolean'"),
        ("min_ram", True, "True is not of type 'integer'"),
        ("min_ram", -1, "Cannot be a negative value"),
        ("min_disk", schema.MAX_INT + 1, "must not exceed 2147483647"),
        ("container_format", "box", "'box' is not one of"),
        ("tags", "a", "is not an array of strings"),
        ("tags", ["t" * 256], "is longer than 255 characters"),
        ("ramdisk_id", "not-a-uuid", "does not match the UUID pattern"),
        ("colour", 1, "1 is not of type 'string'"),
        ("k" * 256, "v", "Custom property should not be greater than 255"),
    ],
)
def test_values_the_schema_refuses(key: str, value: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        schema.check_value(key, value)


def test_reserved_keys() -> None:
    assert schema.is_reserved("locations")
    assert schema.is_reserved("os_glance_import_task")
    assert not schema.is_reserved("os_distro")


def test_tags_keep_their_first_order_without_repeats() -> None:
    assert schema.unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
