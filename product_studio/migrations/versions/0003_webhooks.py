"""Webhook intake: deliveries keep their claim, body, jobs, last change and lease; product_states.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claimed_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("job_ids", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("payload", sa.Text(), nullable=True))
    # Existing rows: their claim is their key, their last change their arrival.
    op.execute("UPDATE deliveries SET claimed_id = delivery_id, updated_at = received_at")
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index(batch.f("ix_deliveries_status_updated_at"), ["status", "updated_at"])

    op.create_table(
        "product_states",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("store", sa.String(255), nullable=False),
        sa.Column("product_id", sa.String(255), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_id", sa.String(32), nullable=True),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_states")),
        sa.UniqueConstraint("platform", "store", "product_id", name=op.f("uq_product_states_platform_store_product_id")),
    )


def downgrade() -> None:
    op.drop_table("product_states")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(batch.f("ix_deliveries_status_updated_at"))
        batch.drop_column("payload")
        batch.drop_column("job_ids")
        batch.drop_column("started_at")
        batch.drop_column("updated_at")
        batch.drop_column("claimed_id")
