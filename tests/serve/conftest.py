"""Shared by the serve tests: the scheduler's model, days of logs, waits, lease holders, and
factories of typed check runs (complete documents, as a real run stores them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from monitor.results import (
    CheckRun,
    ColumnReport,
    DriftResult,
    FeatureDrift,
    Metric,
    PerformanceResult,
    SchemaResult,
    ServiceResult,
    schema_metrics,
)
from monitor.store.logs import insert_logs
from monitor.store.runs import save_run
from monitor.store.tables import model_leases
from tests.conftest import log

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DELAY = timedelta(minutes=5)  # the schedule's default delay
MODEL = "loan_default"


def load_days(engine: sa.Engine, days: int, per_day: int = 12, start: datetime = T0) -> None:
    """``per_day`` logs in each of ``days`` daily windows from ``start``."""
    records = [log(d * 1000 + i, start + d * DAY + timedelta(hours=2 * i))
               for d in range(days) for i in range(per_day)]
    with engine.begin() as conn:
        insert_logs(conn, MODEL, records)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``predicate`` holds; ``timeout`` only stops a hung test (give plenty:
    how long it took is never the point, bench/ measures that)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class StoredLease:
    """A model's lease row as stored: its holder and token, when it expires and when its
    holder acquired it, both by the database's clock (comparable with each other)."""

    holder: str | None
    token: int
    expires_at: datetime
    acquired_at: datetime | None


def stored_lease(engine: sa.Engine, model: str = MODEL) -> StoredLease:
    t = model_leases
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.c.holder, t.c.token, t.c.expires_at, t.c.acquired_at)
                           .where(t.c.model == model)).one()
    return StoredLease(row.holder, int(row.token), row.expires_at, row.acquired_at)


def lock_holders(url: str, model: str = MODEL) -> list[int]:
    """Server processes of the replicas holding a live lease of ``model``: the session of
    each one's advisory lock (killing it ends that replica's presence)."""
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            keys = conn.execute(sa.text(
                "SELECT r.lock_key FROM model_leases AS m JOIN scheduler_replicas AS r "
                "ON r.replica = m.holder WHERE m.model = :model "
                "AND m.expires_at > timezone('UTC', now())"), {"model": model}).scalars().all()
            return [pid for key in keys for pid in conn.execute(sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :hi AND objid = :lo AND objsubid = 1"),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalars()]
    finally:
        eng.dispose()


# --- typed runs ------------------------------------------------------------------------


def feature_drift(feature: str, *, score: float | None = 0.5, threshold: float | None = 0.1,
                  drifted: bool = False, null_rate_change: float = 0.0,
                  unseen_share: float | None = None, error: str | None = None) -> FeatureDrift:
    """One column of a drift section (numerical unless it has an ``unseen_share``)."""
    return FeatureDrift(feature=feature, kind="num" if unseen_share is None else "cat",
                        method=None if error else "ks", score=score, threshold=threshold,
                        drifted=drifted, null_rate_reference=0.0,
                        null_rate_current=max(null_rate_change, 0.0),
                        null_rate_change=null_rate_change, unseen_share=unseen_share,
                        error=error)


def drift_result(features: Iterable[FeatureDrift] = (), *, share_drifted: float = 0.0,
                 dataset_drift: bool = False, status: str = "ok") -> DriftResult:
    return DriftResult(features=tuple(features), share_drifted=share_drifted, drift_share=0.5,
                       dataset_drift=dataset_drift, rows_reference=1000, rows_current=20,
                       status=status)  # type: ignore[arg-type]


def schema_result(columns: Iterable[str] = (), *, violation_rate: float = 0.0,
                  rows: int = 20, status: str = "ok",
                  reasons: tuple[str, ...] = ()) -> SchemaResult:
    """A schema section whose ``columns`` are all present, without violations."""
    reports = tuple(ColumnReport(column=c, role="feature", expected_type="float",
                                 state="present") for c in columns)
    return SchemaResult(rows=rows, status=status, violation_rate=violation_rate,  # type: ignore[arg-type]
                        violating_rows=round(violation_rate * rows), columns=reports,
                        missing_columns=(), unexpected_columns=(), reasons=reasons)


def check_run(model: str, *, end: datetime, status: str = "ok", rows: int = 20,
              window: timedelta = DAY, reasons: tuple[str, ...] = (),
              recomputes: int | None = None, schema: SchemaResult | None = None,
              drift: DriftResult | None = None,
              performance: PerformanceResult | None = None,
              service: ServiceResult | None = None) -> CheckRun:
    """A run of the window ending at ``end`` with the given sections (none by default)."""
    return CheckRun(model=model, start=end - window, end=end, rows=rows, status=status,
                    reasons=reasons, config_hash="c" * 64, reference_version="r1",
                    schema=schema, drift=drift, performance=performance, service=service,
                    recomputes=recomputes)


def save_check_run(engine: sa.Engine, run: CheckRun, *, metrics: list[Metric] | None = None,
                   finished: datetime | None = None) -> int:
    """Store ``run`` as ``run_check`` does: its document and (by default) its figures."""
    finished = finished or run.end
    return save_run(engine, model=run.model, kind="check", window_start=run.start,
                    window_end=run.end, rows=run.rows, status=run.status,
                    summary=run.as_dict(), metrics=run.metrics() if metrics is None else metrics,
                    config_hash=run.config_hash, reference_version=run.reference_version,
                    started_at=finished - timedelta(seconds=3), finished_at=finished)


def save_schema_run(engine: sa.Engine, model: str, result: SchemaResult, *, end: datetime,
                    window: timedelta = DAY, metrics: list[Metric] | None = None,
                    finished: datetime | None = None) -> int:
    """Store a schema-only run, as ``run_schema_check`` does."""
    finished = finished or end
    return save_run(engine, model=model, kind="schema", window_start=end - window,
                    window_end=end, rows=result.rows, status=result.status,
                    summary=result.as_dict(),
                    metrics=schema_metrics(result) if metrics is None else metrics,
                    config_hash="c" * 64, reference_version="r1",
                    started_at=finished - timedelta(seconds=3), finished_at=finished)
