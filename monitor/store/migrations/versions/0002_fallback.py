"""Fallback flag: per-model state, its events, and why the guard answered a request.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.tables import BigId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column with no default: an instant change on both backends, and the
    # rows already stored read as "the model answered".
    op.add_column("inference_logs", sa.Column("fallback_reason", sa.String(40), nullable=True))
    op.create_table(
        "fallback_state",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("bad_streak", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("ok_streak", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("streak", sa.JSON(), nullable=False),
        sa.Column("last_run_id", sa.BigInteger(), nullable=True),
        sa.Column("last_window_end", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("forced", sa.Boolean(), nullable=True),
        sa.Column("override_until", UTCDateTime(), nullable=True),
        sa.Column("override_by", sa.String(200), nullable=True),
        sa.Column("override_reason", sa.Text(), nullable=True),
        sa.Column("override_at", UTCDateTime(), nullable=True),
        sa.Column("flag_since", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_fallback_state"),
    )
    op.create_table(
        "fallback_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("old_active", sa.Boolean(), nullable=False),
        sa.Column("new_active", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fallback_events"),
    )
    op.create_index("ix_fallback_events_model_id", "fallback_events", ["model", "id"])


def downgrade() -> None:
    op.drop_index("ix_fallback_events_model_id", table_name="fallback_events")
    op.drop_table("fallback_events")
    op.drop_table("fallback_state")
    # SQLite drops a column by copying the table: batch mode does that.
    with op.batch_alter_table("inference_logs") as batch:
        batch.drop_column("fallback_reason")
