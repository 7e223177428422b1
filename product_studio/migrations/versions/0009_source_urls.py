"""Photos whose source is fetched by the worker: a job from image URLs is recorded (and answered
202) before any URL is fetched; the cut-out task fetches its photo first.

assets.source_url: the URL to fetch; while it is set and source_key is "" the photo is not fetched
yet (sha256 "", width and height 0), and a URL that cannot be fetched fails the photo.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("source_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("source_url")
