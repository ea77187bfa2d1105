"""Image records: each image's v1 HEAD headers beside its v1 and v2 records (issue 14).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until rendered, as 0006's v2 column (`osimage.server.db.records.backfill`)
    op.add_column("image_records", sa.Column("v1_head", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_records") as batch:
        batch.drop_column("v1_head")
