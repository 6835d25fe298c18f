"""Writing and reading check runs and their per-feature metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.store.tables import check_runs, run_metrics

__all__ = ["Metric", "RunRecord", "insert_run", "latest_runs", "save_run"]


@dataclass(frozen=True)
class Metric:
    check: str
    metric: str
    value: float | None
    feature: str = ""


@dataclass(frozen=True)
class RunRecord:
    id: int
    model: str
    kind: str
    window_start: datetime
    window_end: datetime
    rows: int
    status: str
    summary: dict[str, Any]
    config_hash: str
    reference_version: str | None
    started_at: datetime
    finished_at: datetime


def save_run(engine: Engine, **fields: Any) -> int:
    """Store a run and its metrics in one transaction; return the run id.

    Takes the keyword arguments of ``insert_run``.
    """
    with engine.begin() as conn:
        return insert_run(conn, **fields)


def insert_run(
    conn: sa.Connection,
    *,
    model: str,
    kind: str,
    window_start: datetime,
    window_end: datetime,
    rows: int,
    status: str,
    summary: dict[str, Any],
    metrics: Iterable[Metric],
    config_hash: str,
    reference_version: str | None,
    started_at: datetime,
    finished_at: datetime,
) -> int:
    """Insert a run and its metrics in the caller's transaction; return the run id."""
    run_id = conn.execute(
        sa.insert(check_runs).returning(check_runs.c.id),
        {
            "model": model, "kind": kind, "window_start": window_start,
            "window_end": window_end, "rows": rows, "status": status, "summary": summary,
            "config_hash": config_hash, "reference_version": reference_version,
            "started_at": started_at, "finished_at": finished_at,
        },
    ).scalar_one()
    values = [
        {"run_id": run_id, "check_name": m.check, "metric": m.metric,
         "feature": m.feature, "value": m.value}
        for m in metrics
    ]
    if values:
        conn.execute(sa.insert(run_metrics), values)
    return int(run_id)


def _record(row: Any) -> RunRecord:
    return RunRecord(**{k: row._mapping[k] for k in RunRecord.__dataclass_fields__})


def latest_runs(engine: Engine, model: str, *, kind: str | None = None,
                limit: int = 20) -> list[RunRecord]:
    """Newest runs first."""
    query = sa.select(check_runs).where(check_runs.c.model == model)
    if kind:
        query = query.where(check_runs.c.kind == kind)
    query = query.order_by(check_runs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [_record(r) for r in conn.execute(query)]


def run_metrics_of(engine: Engine, run_id: int) -> list[Metric]:
    query = sa.select(run_metrics).where(run_metrics.c.run_id == run_id).order_by(run_metrics.c.id)
    with engine.connect() as conn:
        return [Metric(r.check_name, r.metric, r.value, r.feature) for r in conn.execute(query)]
