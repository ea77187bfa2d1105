"""Image records: each image's v1 detail record, rendered when it changes, and an index
for v1 lists of every visibility in the default order (issue 14).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_records",
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("v1", sa.Text, nullable=False),
    )
    op.create_index("ix_images_live", "images", ["deleted", "created_at", "id"])
    # filled by `osimage.server.db.records.backfill`, which `engine.migrate` runs after
    # every upgrade (with today's code, which a migration must not import)


def downgrade() -> None:
    op.drop_index("ix_images_live", table_name="images")
    op.drop_table("image_records")
