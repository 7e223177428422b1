"""Publishing to the store: which product a job's photos came from, and each variant's publication.

job_products: the store product a webhook job was made for (where its variants go back to).
publications: one variant written back to one product, recorded before it is attempted and
settled by conditional updates (product_studio/publish).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_products",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("store", sa.String(255), nullable=False),
        sa.Column("product_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_products_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_products")),
        sa.UniqueConstraint("job_id", "platform", "store", "product_id",
                            name=op.f("uq_job_products_job_id_platform_store_product_id")),
    )
    op.create_index(op.f("ix_job_products_platform_store_product_id"), "job_products",
                    ["platform", "store", "product_id"])
    op.create_table(
        "publications",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("variant_id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("store", sa.String(255), nullable=False),
        sa.Column("product_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("variant_key", sa.Text(), nullable=True),
        sa.Column("mark", sa.String(64), nullable=False),
        sa.Column("remote_id", sa.String(255), nullable=True),
        sa.Column("remote_url", sa.Text(), nullable=True),
        sa.Column("admin_url", sa.Text(), nullable=True),
        sa.Column("replaces", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["variant_id"], ["variants.id"], name=op.f("fk_publications_variant_id_variants"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_publications_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
        sa.UniqueConstraint("variant_id", "platform", "store", "product_id",
                            name=op.f("uq_publications_variant_id_platform_store_product_id")),
    )
    op.create_index(op.f("ix_publications_job_id"), "publications", ["job_id"])
    op.create_index(op.f("ix_publications_status_updated_at"), "publications", ["status", "updated_at"])
    op.create_index(op.f("ix_publications_platform_store_product_id"), "publications",
                    ["platform", "store", "product_id"])


def downgrade() -> None:
    op.drop_table("publications")
    op.drop_table("job_products")
