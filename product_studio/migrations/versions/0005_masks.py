"""Touch-up: mask versions per (store, photo), and which version an asset's cut-out used.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
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
        "masks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("store", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("asset_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_masks")),
        sa.UniqueConstraint("store", "sha256", "version", name=op.f("uq_masks_store_sha256_version")),
    )
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("mask_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("mask_version")
    op.drop_table("masks")
