"""Log blocks: a columnar, read-optimised copy of inference_logs for fast window reads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.tables import BigId, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_blocks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("lo_id", sa.BigInteger(), nullable=False),
        sa.Column("hi_id", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("ts_min", UTCDateTime(), nullable=False),
        sa.Column("ts_max", UTCDateTime(), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("labels", sa.LargeBinary(), nullable=False),
        sa.Column("labels_hw", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model", "lo_id", name="uq_log_blocks_model_lo"),
    )
    op.create_index("ix_log_blocks_model_ts_min", "log_blocks", ["model", "ts_min"])


def downgrade() -> None:
    op.drop_index("ix_log_blocks_model_ts_min", table_name="log_blocks")
    op.drop_table("log_blocks")
