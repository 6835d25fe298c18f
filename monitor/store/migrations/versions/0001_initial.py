"""Initial store: inference logs, ground truth, check runs and their metrics.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.tables import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inference_logs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=True),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("probabilities", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inference_logs"),
        sa.UniqueConstraint("model", "request_id", name="uq_inference_logs_model_request"),
    )
    op.create_index("ix_inference_logs_model_ts", "inference_logs", ["model", "ts"])
    op.create_table(
        "ground_truth",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ground_truth"),
        sa.UniqueConstraint("model", "request_id", name="uq_ground_truth_model_request"),
    )
    op.create_table(
        "check_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("reference_version", sa.String(64), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_check_runs"),
    )
    op.create_index("ix_check_runs_model_window_end", "check_runs", ["model", "window_end"])
    op.create_table(
        "run_metrics",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("check_name", sa.String(40), nullable=False),
        sa.Column("metric", sa.String(80), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False, server_default=""),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_run_metrics"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["check_runs.id"],
            name="fk_run_metrics_run_id_check_runs",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "run_id", "check_name", "metric", "feature", name="uq_run_metrics_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("run_metrics")
    op.drop_index("ix_check_runs_model_window_end", table_name="check_runs")
    op.drop_table("check_runs")
    op.drop_table("ground_truth")
    op.drop_index("ix_inference_logs_model_ts", table_name="inference_logs")
    op.drop_table("inference_logs")
