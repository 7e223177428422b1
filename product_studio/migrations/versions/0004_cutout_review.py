"""Cut-out confidence and review on assets; check warnings on variants.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("cutout_confidence", sa.Double(), nullable=True))
        batch.add_column(sa.Column("review_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("variants") as batch:
        batch.add_column(sa.Column("check_warnings", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("variants") as batch:
        batch.drop_column("check_warnings")
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("review_reason")
        batch.drop_column("cutout_confidence")
