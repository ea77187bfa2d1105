"""Image API v2 over the same catalogue: visibility, os_hidden, multihash, member status, tags.

`visibility` is the truth both APIs read (spec v2 §18.1); `is_public` stays, kept equal
to `visibility == 'public'` by every writer, so v1 queries and indexes work unchanged.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(
            sa.Column("visibility", sa.String(20), nullable=False, server_default="shared")
        )
        batch.add_column(
            sa.Column("os_hidden", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("os_hash_algo", sa.String(64)))
        batch.add_column(sa.Column("os_hash_value", sa.String(128)))
    op.execute("UPDATE images SET visibility = 'public' WHERE is_public")
    op.create_index("ix_images_visibility", "images", ["visibility", "created_at"])
    # the v2 lists' default order: an index walk that stops after one page
    op.create_index("ix_images_v2_listing", "images", ["deleted", "os_hidden", "created_at", "id"])
    with op.batch_alter_table("image_members") as batch:
        batch.add_column(
            sa.Column("status", sa.String(20), nullable=False, server_default="pending")
        )
    op.create_table(
        "image_tags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("value", sa.String(255), nullable=False),
        sa.UniqueConstraint("image_id", "value", name="uq_image_tags_image_value"),
    )
    op.create_index("ix_image_tags_value", "image_tags", ["value", "image_id"])


def downgrade() -> None:
    op.drop_table("image_tags")
    with op.batch_alter_table("image_members") as batch:
        batch.drop_column("status")
    op.drop_index("ix_images_v2_listing", "images")
    op.drop_index("ix_images_visibility", "images")
    with op.batch_alter_table("images") as batch:
        for name in ("os_hash_value", "os_hash_algo", "os_hidden", "visibility"):
            batch.drop_column(name)
