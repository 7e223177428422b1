"""Leases on variant claims, and the completion-callback outbox on jobs.

variants.lease_until: a RUNNING variant is held by the worker that claimed it until then; the
worker renews it while it renders, and only an expired lease may be claimed again or taken back by
the sweeper. jobs.callback_due_at: set in the transaction that finishes a job with a callback URL,
cleared when the callback is settled; the sweeper sends what stays due.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("variants") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_due_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_jobs_callback_due_at"), ["callback_due_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_callback_due_at"))
        batch.drop_column("callback_due_at")
    with op.batch_alter_table("variants") as batch:
        batch.drop_column("lease_until")
