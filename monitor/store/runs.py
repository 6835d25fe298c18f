"""Check runs and their figures: writing them, and every read of them.

A run is stored as its document (``check_runs.summary``: ``CheckRun.as_dict()``, or the
schema-only run's) with one ``run_metrics`` row per figure, in one transaction. Reads
hand back ``RunRecord`` rows whose ``run`` is the typed ``CheckRun`` again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.results import CheckRun, Metric
from monitor.store.tables import check_runs, run_metrics
from monitor.times import aware

__all__ = [
    "Metric",
    "RunRecord",
    "get_run",
    "immature_windows",
    "insert_run",
    "latest_runs",
    "latest_verdicts",
    "previous_verdict",
    "run_metrics_of",
    "save_run",
]


@dataclass(frozen=True)
class RunRecord:
    """A ``check_runs`` row; ``summary`` is the stored document as it is."""

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

    @property
    def run(self) -> CheckRun | None:
        """The typed run of a ``check`` row (None for a schema-only run); ``ValueError``
        when its document does not have the shape of one."""
        if self.kind != "check":
            return None
        return CheckRun.from_dict({**self.summary, "run_id": self.id})



def save_run(engine: Engine, **fields: Any) -> int:
    """Store a run and its metrics in one transaction; return the run id.

    Takes the keyword arguments of ``insert_run``.
    """
    with engine.begin() as conn:
        return insert_run(conn, **fields)


def insert_run(
    conn: Connection,
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


def get_run(engine: Engine, run_id: int) -> RunRecord | None:
    """One run by id, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(check_runs).where(check_runs.c.id == run_id)).first()
    return None if row is None else _record(row)


def run_metrics_of(engine: Engine, run_id: int) -> list[Metric]:
    query = sa.select(run_metrics).where(run_metrics.c.run_id == run_id).order_by(run_metrics.c.id)
    with engine.connect() as conn:
        return [Metric(r.check_name, r.metric, r.value, r.feature) for r in conn.execute(query)]


def immature_windows(engine: Engine, model: str, since: datetime) -> list[tuple[int, datetime]]:
    """(run id, window end) of the windows ending at or after ``since`` whose latest check
    run judged accuracy on immature labels, oldest window first."""
    latest = (
        sa.select(sa.func.max(check_runs.c.id).label("id"))
        .where(check_runs.c.model == model, check_runs.c.kind == "check",
               check_runs.c.window_end >= since)
        .group_by(check_runs.c.window_end)
        .subquery()
    )
    query = (
        sa.select(check_runs.c.id, check_runs.c.window_end)
        .join(latest, latest.c.id == check_runs.c.id)
        .join(run_metrics, run_metrics.c.run_id == check_runs.c.id)
        .where(run_metrics.c.check_name == "performance", run_metrics.c.metric == "mature",
               run_metrics.c.value == 0.0)
        .order_by(check_runs.c.window_end)
    )
    with engine.connect() as conn:
        return [(int(run_id), end) for run_id, end in conn.execute(query)]


def latest_verdicts(conn: Connection, model: str, *, reasons_of_last: int
                    ) -> list[tuple[int, datetime, str, tuple[str, ...]]]:
    """(run id, window end, status, reasons) of the latest check run of every window of
    the model, oldest window first, in the caller's transaction; reasons are loaded for
    the last ``reasons_of_last`` windows only (older ones have none)."""
    latest = (sa.select(sa.func.max(check_runs.c.id))
              .where(check_runs.c.model == model, check_runs.c.kind == "check")
              .group_by(check_runs.c.window_end))
    rows = conn.execute(
        sa.select(check_runs.c.id, check_runs.c.window_end, check_runs.c.status)
        .where(check_runs.c.id.in_(latest)).order_by(check_runs.c.window_end)
    ).all()
    recent = {r.id for r in rows[-reasons_of_last:]} if reasons_of_last else set()
    reasons = {r.id: tuple(r.summary.get("reasons") or ()) for r in conn.execute(
        sa.select(check_runs.c.id, check_runs.c.summary).where(check_runs.c.id.in_(recent)))}
    return [(int(r.id), aware(r.window_end) or r.window_end, r.status, reasons.get(r.id, ()))
            for r in rows]


def previous_verdict(conn: Connection, model: str, window_end: datetime, *, before: int
                     ) -> tuple[int, str] | None:
    """(run id, status) of the newest check run of the model's window ending at
    ``window_end`` stored before run ``before``, in the caller's transaction; None when
    that run is the window's first."""
    row = conn.execute(
        sa.select(check_runs.c.id, check_runs.c.status)
        .where(check_runs.c.model == model, check_runs.c.kind == "check",
               check_runs.c.window_end == window_end, check_runs.c.id < before)
        .order_by(check_runs.c.id.desc()).limit(1)
    ).first()
    return None if row is None else (int(row.id), str(row.status))
