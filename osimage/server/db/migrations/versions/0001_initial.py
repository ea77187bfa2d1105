"""Initial schema: images, image_properties, image_members.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("virtual_size", sa.BigInteger),
        sa.Column("checksum", sa.String(32)),
        sa.Column("sha256", sa.String(64)),
        sa.Column("disk_format", sa.String(20)),
        sa.Column("container_format", sa.String(20)),
        sa.Column("min_disk", sa.Integer, nullable=False),
        sa.Column("min_ram", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("deleted_at", sa.DateTime),
        sa.Column("location", sa.Text),
        sa.Column("location_is_external", sa.Boolean, nullable=False),
    )
    op.create_index("ix_images_listing", "images", ["deleted", "status", "created_at", "id"])
    op.create_index("ix_images_owner", "images", ["owner", "created_at"])
    op.create_index("ix_images_public", "images", ["is_public", "created_at"])
    op.create_index("ix_images_updated_at", "images", ["updated_at"])
    op.create_index("ix_images_name", "images", ["name"])
    op.create_table(
        "image_properties",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text),
        sa.UniqueConstraint("image_id", "key", name="uq_image_properties_image_key"),
    )
    op.create_index("ix_image_properties_key", "image_properties", ["key", "image_id"])
    op.create_table(
        "image_members",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("member", sa.String(255), nullable=False),
        sa.Column("can_share", sa.Boolean, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("image_id", "member", name="uq_image_members_image_member"),
    )
    op.create_index("ix_image_members_member", "image_members", ["member", "deleted"])


def downgrade() -> None:
    op.drop_table("image_members")
    op.drop_table("image_properties")
    op.drop_table("images")
