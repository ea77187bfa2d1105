"""Image records: each image's v2 record beside its v1 one (issues 12 and 14).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until rendered: by `osimage.server.db.records.backfill`, which `engine.migrate`
    # runs after every upgrade (with today's code, which a migration must not import)
    op.add_column("image_records", sa.Column("v2", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_records") as batch:
        batch.drop_column("v2")
