"""Per-model leases of the scheduler's work, the replicas that hold them, and each check
run's recheck bookkeeping (the run it recomputes, the labels it saw).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.tables import BigId, UTCDateTime

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_leases",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=True),
        sa.Column("renewed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("model", name="pk_model_leases"),
    )
    op.create_table(
        "scheduler_replicas",
        sa.Column("replica", sa.String(200), nullable=False),
        sa.Column("lock_key", sa.BigInteger(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("replica", name="pk_scheduler_replicas"),
    )
    op.create_table(
        "run_rechecks",
        sa.Column("run_id", BigId, autoincrement=False, nullable=False),
        sa.Column("recomputes", sa.BigInteger(), nullable=True),
        sa.Column("labels", sa.BigInteger(), nullable=True),
        sa.Column("label_max_id", sa.BigInteger(), nullable=True),
        sa.Column("label_scope", sa.String(10), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["check_runs.id"], ondelete="CASCADE",
                                name="fk_run_rechecks_run_id_check_runs"),
        sa.PrimaryKeyConstraint("run_id", name="pk_run_rechecks"),
        sa.UniqueConstraint("recomputes", name="uq_run_rechecks_recomputes"),
    )


def downgrade() -> None:
    op.drop_table("run_rechecks")
    op.drop_table("scheduler_replicas")
    op.drop_table("model_leases")
