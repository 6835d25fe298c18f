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
from monitor.store.tables import (
    check_runs,
    ground_truth,
    inference_logs,
    log_blocks,
    run_metrics,
    run_rechecks,
)
from monitor.times import aware

__all__ = [
    "LabelMark",
    "Metric",
    "RecheckCandidate",
    "RunRecord",
    "get_run",
    "immature_windows",
    "insert_run",
    "label_mark",
    "labels_arrived",
    "latest_runs",
    "latest_verdicts",
    "previous_verdict",
    "recheck_candidates",
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


@dataclass(frozen=True)
class LabelMark:
    """What a run knew of its window's labels when it read them, so that a recheck can
    tell whether any arrived since. Labels are only ever added (a request id's label is
    never replaced). ``scope``:

    * ``blocks`` (mqm's log table, compacted): ``max_id`` is the model's log blocks'
      label high-water (``log_blocks.labels_hw``): the compactor takes it when every
      smaller label id is committed, so the run read every label up to it. New labels:
      the window's labels above it. Reading it costs one index lookup.
    * ``window`` (mqm's log table, no blocks yet): ``count`` and ``max_id`` of the
      window's labels, counted through its logs (a join over the window).
    * ``model`` (a user's log table, whose rows the store cannot join): ``count`` and
      ``max_id`` of the model's labels.
    """

    scope: str
    count: int | None
    max_id: int | None


def _label_counts(engine: Engine, model: str, start: datetime, end: datetime,
                  scope: str) -> LabelMark:
    g, lg = ground_truth, inference_logs
    if scope == "window":
        query = (sa.select(sa.func.count(g.c.id), sa.func.max(g.c.id))
                 .select_from(lg.join(g, sa.and_(g.c.model == lg.c.model,
                                                 g.c.request_id == lg.c.request_id)))
                 .where(lg.c.model == model, lg.c.ts >= start, lg.c.ts < end))
    else:
        query = sa.select(sa.func.count(g.c.id), sa.func.max(g.c.id)).where(g.c.model == model)
    with engine.connect() as conn:
        count, max_id = conn.execute(query).one()
    return LabelMark(scope, int(count or 0), None if max_id is None else int(max_id))


def label_mark(engine: Engine, model: str, start: datetime, end: datetime, *,
               own_table: bool) -> LabelMark:
    """The ``LabelMark`` of the window from ``start`` to ``end`` now, to be taken before
    the window is read (a label stored in between is then read, and counted again next
    time, never missed). ``own_table``: the model's logs are in mqm's own table."""
    if not own_table:
        return _label_counts(engine, model, start, end, "model")
    with engine.connect() as conn:
        hw = conn.execute(sa.select(sa.func.max(log_blocks.c.labels_hw))
                          .where(log_blocks.c.model == model)).scalar()
    if hw is None:
        return _label_counts(engine, model, start, end, "window")
    return LabelMark("blocks", None, int(hw))


def labels_arrived(engine: Engine, model: str, start: datetime, end: datetime,
                   mark: LabelMark) -> bool:
    """Whether labels of the window from ``start`` to ``end`` arrived since ``mark``."""
    if mark.scope != "blocks":
        return _label_counts(engine, model, start, end, mark.scope) != mark
    g, lg = ground_truth, inference_logs
    query = (sa.select(g.c.id)
             .select_from(g.join(lg, sa.and_(lg.c.model == g.c.model,
                                             lg.c.request_id == g.c.request_id)))
             .where(g.c.model == model, g.c.id > (mark.max_id or 0),
                    lg.c.ts >= start, lg.c.ts < end)
             .limit(1))
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


@dataclass(frozen=True)
class RecheckCandidate:
    """The latest check run of a window that judged accuracy on immature labels, and the
    ``LabelMark`` it recorded (None: none recorded)."""

    run_id: int
    start: datetime
    end: datetime
    labels: LabelMark | None


def recheck_candidates(engine: Engine, model: str, since: datetime) -> list[RecheckCandidate]:
    """The windows ending at or after ``since`` whose latest check run judged accuracy on
    immature labels, oldest window first, with the labels that run saw."""
    c, r = check_runs.c, run_rechecks.c
    latest = (
        sa.select(sa.func.max(c.id).label("id"))
        .where(c.model == model, c.kind == "check", c.window_end >= since)
        .group_by(c.window_end)
        .subquery()
    )
    query = (
        sa.select(c.id, c.window_start, c.window_end, r.label_scope, r.labels, r.label_max_id)
        .join(latest, latest.c.id == c.id)
        .join(run_metrics, run_metrics.c.run_id == c.id)
        .outerjoin(run_rechecks, r.run_id == c.id)
        .where(run_metrics.c.check_name == "performance", run_metrics.c.metric == "mature",
               run_metrics.c.value == 0.0)
        .order_by(c.window_end)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [RecheckCandidate(
        run_id=int(row.id), start=row.window_start, end=row.window_end,
        labels=None if row.label_scope is None else LabelMark(
            row.label_scope, None if row.labels is None else int(row.labels),
            None if row.label_max_id is None else int(row.label_max_id)))
        for row in rows]


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
