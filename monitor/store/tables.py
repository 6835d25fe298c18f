"""The store's tables (SQLAlchemy Core). Alembic migrations create and change them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

__all__ = [
    "BigId",
    "UTCDateTime",
    "check_runs",
    "fallback_events",
    "fallback_state",
    "ground_truth",
    "inference_logs",
    "log_blocks",
    "metadata",
    "model_leases",
    "reference_profiles",
    "retention_state",
    "run_metrics",
    "run_rechecks",
    "scheduler_replicas",
    "scheduler_state",
]

# Named constraints so that migrations can refer to them on every backend.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Times stored as naive UTC on every backend, returned timezone-aware.

    One canonical form keeps range filters right on SQLite, where times are text.
    Naive input is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


# An auto-incrementing 64-bit key that SQLite also treats as its rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

inference_logs = sa.Table(
    "inference_logs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=True),
    sa.Column("request_id", sa.String(200), nullable=False),
    sa.Column("ts", UTCDateTime(), nullable=False),
    # Features exactly as received (JSON types kept), so type mismatches stay visible.
    sa.Column("features", sa.JSON(), nullable=False),
    sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("probabilities", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=True),
    sa.Column("error", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    # NULL: the model answered. Otherwise why the serving guard answered with the
    # default prediction instead: flag, error, timeout, overload.
    sa.Column("fallback_reason", sa.String(40), nullable=True),
    sa.UniqueConstraint("model", "request_id", name="uq_inference_logs_model_request"),
    sa.Index("ix_inference_logs_model_ts", "model", "ts"),
)

ground_truth = sa.Table(
    "ground_truth",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("request_id", sa.String(200), nullable=False),
    sa.Column("label", sa.JSON(), nullable=False),
    # When the label became known; label delay = ts - the inference's ts.
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("model", "request_id", name="uq_ground_truth_model_request"),
    # Retention walks a model's labels by time, in (ts, id) order.
    sa.Index("ix_ground_truth_model_ts", "model", "ts", "id"),
)

check_runs = sa.Table(
    "check_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("window_start", UTCDateTime(), nullable=False),
    sa.Column("window_end", UTCDateTime(), nullable=False),
    sa.Column("rows", sa.BigInteger(), nullable=False),
    # ok, warn, critical, insufficient_data, error
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("summary", sa.JSON(), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("reference_version", sa.String(64), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=False),
    sa.Index("ix_check_runs_model_window_end", "model", "window_end"),
)

run_metrics = sa.Table(
    "run_metrics",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id",
        BigId,
        sa.ForeignKey("check_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("check_name", sa.String(40), nullable=False),
    sa.Column("metric", sa.String(80), nullable=False),
    # Empty string, not NULL, for whole-window metrics: keeps the unique key simple.
    sa.Column("feature", sa.String(200), nullable=False, server_default=""),
    sa.Column("value", sa.Float(), nullable=True),
    sa.UniqueConstraint("run_id", "check_name", "metric", "feature", name="uq_run_metrics_key"),
)

# One row per model: the fallback flag's automatic state (monitor.policy.AutoState),
# its manual override, and when the served flag last changed.
fallback_state = sa.Table(
    "fallback_state",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("since", UTCDateTime(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("bad_streak", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("ok_streak", sa.Integer(), nullable=False, server_default="0"),
    # The runs of the streak that can flip the state next: the evidence a transition cites.
    sa.Column("streak", sa.JSON(), nullable=False),
    # No foreign key: pruning old runs must not touch the flag.
    sa.Column("last_run_id", sa.BigInteger(), nullable=True),
    sa.Column("last_window_end", UTCDateTime(), nullable=True),
    sa.Column("last_success_at", UTCDateTime(), nullable=True),
    # NULL: no override; true / false: forced on / off.
    sa.Column("forced", sa.Boolean(), nullable=True),
    sa.Column("override_until", UTCDateTime(), nullable=True),
    sa.Column("override_by", sa.String(200), nullable=True),
    sa.Column("override_reason", sa.Text(), nullable=True),
    sa.Column("override_at", UTCDateTime(), nullable=True),
    # When the served (effective) flag last changed value; NULL: never.
    sa.Column("flag_since", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Every change of a flag. kind auto: the automatic state changed (old/new are its
# values; details say whether an override hid it); manual and expiry: the served flag.
fallback_events = sa.Table(
    "fallback_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("old_active", sa.Boolean(), nullable=False),
    sa.Column("new_active", sa.Boolean(), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.Index("ix_fallback_events_model_id", "model", "id"),
)

# One row per model: how far ``mqm serve`` has checked. ``watermark`` is the end of the
# last window whose scheduled run is stored; it moves in the transaction that stores
# that run, by compare-and-set, so no window is skipped or counted twice.
scheduler_state = sa.Table(
    "scheduler_state",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("watermark", UTCDateTime(), nullable=True),
    # No foreign key: pruning old runs must not touch the watermark.
    sa.Column("last_run_id", sa.BigInteger(), nullable=True),
    sa.Column("last_run_at", UTCDateTime(), nullable=True),
    # Why the last tick stopped short (cleared by the next stored run).
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_error_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# A read-optimised copy of inference_logs: the rows of one model with lo_id < id <= hi_id,
# columns typed and compressed (Arrow IPC, see monitor/store/blocks.py), and their labels
# as of ground_truth id labels_hw. Derived data: deleting blocks loses nothing, the
# compactor builds them again from the rows.
log_blocks = sa.Table(
    "log_blocks",
    metadata,
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
    # One block per start: two compactors racing for the same rows cannot both commit.
    sa.UniqueConstraint("model", "lo_id", name="uq_log_blocks_model_lo"),
    sa.Index("ix_log_blocks_model_ts_min", "model", "ts_min"),
    # Covers the blocks' list (``blocks._blocks``): on SQLite, ``labels_hw`` comes after
    # the blobs in a row, and reading it from the row walks their overflow pages.
    sa.Index("ix_log_blocks_model_marks", "model", "lo_id", "hi_id", "rows", "labels_hw"),
)

# One row per model: which replica of ``mqm serve`` runs the model's scheduled work, under
# which fencing token, until when. A replica renews its leases every few seconds; a lease
# not renewed by ``expires_at`` (its holder stalled, or gone) is taken over by another
# replica, which raises ``token``. Every write a replica makes for a model (a check's
# watermark move, a recheck) checks in its own transaction that the token is still the
# one it started under, so a holder that resumes after a takeover writes nothing.
model_leases = sa.Table(
    "model_leases",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    # The holding replica (``scheduler_replicas.replica``); NULL: released, free to take.
    sa.Column("holder", sa.String(200), nullable=True),
    sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=True),
    sa.Column("renewed_at", UTCDateTime(), nullable=True),
)

# One row per running scheduler replica (PostgreSQL): its presence, renewed with its
# leases. The live ones (not expired) share the models; ``lock_key`` is a session-level
# advisory lock the replica holds while its session lives, so that the others notice a
# killed replica at once (its session ends, the lock is free) and hand its models over
# without waiting for its leases to expire.
scheduler_replicas = sa.Table(
    "scheduler_replicas",
    metadata,
    sa.Column("replica", sa.String(200), primary_key=True),
    sa.Column("lock_key", sa.BigInteger(), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# One row per check run stored by ``run_check``: the run it recomputes (unique, so that no
# run is recomputed twice and the recheck chain cannot fork) and the labels of its window
# the store held when the run read it (a count and the largest label id, over the window's
# logs, or over the model's labels for a user's log table: ``label_scope`` window or
# model), so that a recheck runs again only when they changed.
run_rechecks = sa.Table(
    "run_rechecks",
    metadata,
    sa.Column("run_id", BigId, sa.ForeignKey("check_runs.id", ondelete="CASCADE"),
              primary_key=True, autoincrement=False),
    # No foreign key: pruning old runs must not touch the ones that recomputed them.
    sa.Column("recomputes", sa.BigInteger(), nullable=True),
    sa.Column("labels", sa.BigInteger(), nullable=True),
    sa.Column("label_max_id", sa.BigInteger(), nullable=True),
    sa.Column("label_scope", sa.String(10), nullable=True),
    sa.UniqueConstraint("recomputes", name="uq_run_rechecks_recomputes"),
)

# One row per model: what retention (``monitor.store.retention``) last did. ``horizon``:
# every log, label and log block of the model older than it is gone; the counts are the
# rows it deleted since the row was created (exported as counters).
retention_state = sa.Table(
    "retention_state",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("horizon", UTCDateTime(), nullable=True),
    sa.Column("last_run_at", UTCDateTime(), nullable=False),
    sa.Column("logs_deleted", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("labels_deleted", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("blocks_deleted", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# What the checks need from a reference set (drift profile, realized metrics, fitted
# calibration), built once per key and read by every later check instead of the file.
# ``key`` hashes the reference file's content, the contract, the calibration rule and the
# profile's format (monitor/run/reference.py), so a changed file is a new key. Derived
# data: deleting rows loses nothing, the next check builds them again.
reference_profiles = sa.Table(
    "reference_profiles",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("reference_version", sa.String(64), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
