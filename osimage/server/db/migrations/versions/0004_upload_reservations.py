"""Upload reservations: the bytes of storage quota an upload in progress holds.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_leases") as batch:
        batch.add_column(
            sa.Column("reserved", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("upload_leases") as batch:
        batch.drop_column("reserved")
