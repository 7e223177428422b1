"""Generated signing secrets in the database, not in each machine's data folder: machines sharing
a database but not a disk (the production layout) must sign download links, completion callbacks
and session cookies with one key. A secret a data folder already holds is adopted at its first
use (runtime.secret), so existing links, callbacks' receivers and sessions keep working.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generated_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("generated_secrets")
