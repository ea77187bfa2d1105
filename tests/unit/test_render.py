"""A HEAD's headers, rendered in one pass, are the pairs the general path gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from osimage.server.api import render
from osimage.server.api.http import raw_headers
from osimage.server.db.catalog import ImageRow


def row(**changes: Any) -> ImageRow:
    fields: dict[str, Any] = {
        "id": "0b9d5c7e-1111-4222-8333-444455556666",
        "name": "bénch",
        "status": "active",
        "size": 5120,
        "virtual_size": None,
        "checksum": "0123456789abcdef0123456789abcdef",
        "sha256": "ab" * 32,
        "disk_format": "qcow2",
        "container_format": "bare",
        "min_disk": 0,
        "min_ram": 0,
        "owner": "p-bench",
        "is_public": True,
        "protected": False,
        "deleted": False,
        "created_at": datetime(2025, 1, 1, 0, 0, 5),
        "updated_at": datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC),
        "deleted_at": None,
        "location": None,
        "location_is_external": False,
        "properties": {"Bench Key": "välue", "unset": None, "k3": "x%y"},
    }
    fields.update(changes)
    return ImageRow(**fields)


@pytest.mark.parametrize(
    "image",
    [
        row(),
        row(deleted=True, deleted_at=datetime(2025, 2, 1)),
        row(checksum=None, sha256=None, size=None, name=None, properties={}),
        row(virtual_size=7, min_ram=5, status="queued", protected=True, is_public=False),
    ],
)
@pytest.mark.parametrize("length", [0, 5120])
def test_raw_head_headers_match_the_general_rendering(image: ImageRow, length: int) -> None:
    general = raw_headers([*render.headers(image), ("content-length", str(length))])
    assert render.raw_headers(image, length) == general
