"""The tables. Portable SQL only: the same schema serves SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()


def _image_id(**options: Any) -> Column[str]:
    """The `image_id` column of a table whose rows belong to an image (and go with it)."""
    return Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"), **options)


images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255)),
    Column("status", String(30), nullable=False),
    Column("size", BigInteger),
    Column("virtual_size", BigInteger),
    Column("checksum", String(32)),
    Column("sha256", String(64)),
    Column("disk_format", String(20)),
    Column("container_format", String(20)),
    Column("min_disk", Integer, nullable=False, default=0),
    Column("min_ram", Integer, nullable=False, default=0),
    Column("owner", String(255)),
    Column("is_public", Boolean, nullable=False, default=False),
    Column("protected", Boolean, nullable=False, default=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("deleted_at", DateTime),
    Column("location", Text),  # internal store URL or external URL; never returned
    Column("location_is_external", Boolean, nullable=False, default=False),
    # v2 (migration 0003): visibility is what both APIs read; is_public == (it == "public")
    Column("visibility", String(20), nullable=False, default="shared", server_default="shared"),
    Column("os_hidden", Boolean, nullable=False, default=False, server_default=false()),
    Column("os_hash_algo", String(64)),
    Column("os_hash_value", String(128)),
    Index("ix_images_listing", "deleted", "status", "created_at", "id"),
    Index("ix_images_owner", "owner", "created_at"),
    Index("ix_images_public", "is_public", "created_at"),
    Index("ix_images_updated_at", "updated_at"),
    Index("ix_images_name", "name"),
    Index("ix_images_visibility", "visibility", "created_at"),
    Index("ix_images_v2_listing", "deleted", "os_hidden", "created_at", "id"),  # v2 default order
    # v1 lists of every visibility (an admin's is_public=none, the SDK's default) in the
    # default order, without sorting the catalogue (migration 0005, issue 14)
    Index("ix_images_live", "deleted", "created_at", "id"),
)

image_properties = Table(
    "image_properties",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _image_id(nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", Text),
    UniqueConstraint("image_id", "key", name="uq_image_properties_image_key"),
    Index("ix_image_properties_key", "key", "image_id"),
)

image_members = Table(
    "image_members",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _image_id(nullable=False),
    Column("member", String(255), nullable=False),
    Column("can_share", Boolean, nullable=False, default=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # v2 member status (migration 0003); rows added through v1 start pending, as in queens
    Column("status", String(20), nullable=False, default="pending", server_default="pending"),
    UniqueConstraint("image_id", "member", name="uq_image_members_image_member"),
    Index("ix_image_members_member", "member", "deleted"),
)

# The lease of an upload in progress (a `saving` image): the `osimage serve` instance
# receiving it and when that instance last renewed it (see osimage/server/db/leases.py).
# A table of its own, so image reads stay as they are; a row outlives its upload until
# the renew loop drops it.
upload_leases = Table(
    "upload_leases",
    metadata,
    _image_id(primary_key=True),
    Column("node", String(255), nullable=False),
    Column("seen_at", DateTime, nullable=False),
    # bytes of the owner's storage quota this upload holds while it runs (see `reserve`)
    Column("reserved", BigInteger, nullable=False, server_default=text("0")),
)

# v2 image tags (migration 0003): a set of strings per image; v1 never shows them.
image_tags = Table(
    "image_tags",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _image_id(nullable=False),
    Column("value", String(255), nullable=False),
    UniqueConstraint("image_id", "value", name="uq_image_tags_image_value"),
    Index("ix_image_tags_value", "value", "image_id"),
)

# Each image's v1 detail record and v2 record as JSON text, rewritten whenever the
# image, its properties or its tags change (migrations 0005 and 0006,
# `osimage.server.db.records`): a list page joins these instead of rendering every
# row. `updated_at` is the image's when the records were rendered; a record whose
# stamp differs from its image's is stale and not used.
image_records = Table(
    "image_records",
    metadata,
    _image_id(primary_key=True),
    Column("updated_at", DateTime, nullable=False),
    Column("v1", Text, nullable=False),
    Column("v2", Text, nullable=True),  # NULL: written by a process that predates v2 records
    # a v1 HEAD's headers but the length (`render.head_text`); NULL: by an older process
    Column("v1_head", Text, nullable=True),
)
