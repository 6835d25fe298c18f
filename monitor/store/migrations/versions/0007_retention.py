"""Retention: an index to walk a model's labels by time, and what retention last did.

The log table stays one table on PostgreSQL too (not partitioned by time): see
``monitor.store.retention`` for why, and bench/README.md for the measurements.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ground_truth_model_ts", "ground_truth", ["model", "ts", "id"])
    op.create_table(
        "retention_state",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("horizon", UTCDateTime(), nullable=True),
        sa.Column("last_run_at", UTCDateTime(), nullable=False),
        sa.Column("logs_deleted", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("labels_deleted", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("blocks_deleted", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_retention_state"),
    )


def downgrade() -> None:
    op.drop_table("retention_state")
    op.drop_index("ix_ground_truth_model_ts", table_name="ground_truth")
