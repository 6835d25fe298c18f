"""What the HTTP API and the metrics scrape read: typed rows, one function per question.

The API pages through runs and reads one with its figures, the newest run and the last
successful one of each model; the scrape reads one snapshot (``scrape_snapshot``) of the
latest run, version, run counts and flag of every model. Runs come back as ``RunRecord``
(whose ``run`` is the typed ``CheckRun``), flags as ``StoredFlag``.

``StoreError`` and ``UNREACHABLE`` name the driver's errors for callers that must not
import SQLAlchemy: the root of every store error, and those meaning the store cannot be
reached.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.results import Metric
from monitor.store.flags import StoredFlag, flag_rows
from monitor.store.retention import RetentionRow, retention_rows
from monitor.store.runs import RunRecord
from monitor.store.tables import check_runs, inference_logs, run_metrics
from monitor.times import aware

__all__ = [
    "UNREACHABLE",
    "RunPage",
    "ScrapeSnapshot",
    "StoreError",
    "last_successes",
    "newest_runs",
    "run_page",
    "run_with_metrics",
    "scrape_snapshot",
]

StoreError = sa.exc.SQLAlchemyError
UNREACHABLE: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError)


def _record(row: Any) -> RunRecord:
    return RunRecord(**{k: row._mapping[k] for k in RunRecord.__dataclass_fields__})


# --- the API ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPage:
    """Runs newest first; ``next``: the ``before`` of the next page (None: no more)."""

    runs: list[RunRecord]
    next: int | None


def run_page(engine: Engine, model: str, *, limit: int, before: int | None = None,
             kind: str | None = None) -> RunPage:
    """At most ``limit`` of the model's runs with an id below ``before``, of ``kind``
    (None: any), newest first."""
    c = check_runs.c
    query = sa.select(check_runs).where(c.model == model)
    if before is not None:
        query = query.where(c.id < before)
    if kind is not None:
        query = query.where(c.kind == kind)
    # One more than asked: whether it exists says if there is a next page.
    query = query.order_by(c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [_record(r) for r in conn.execute(query)]
    page = rows[:limit]
    return RunPage(runs=page, next=page[-1].id if len(rows) > limit else None)


def run_with_metrics(engine: Engine, run_id: int) -> tuple[RunRecord, list[Metric]] | None:
    """One run and its figures in stored order, read on one connection; None: no such run."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(check_runs).where(check_runs.c.id == run_id)).first()
        if row is None:
            return None
        figures = conn.execute(sa.select(run_metrics).where(run_metrics.c.run_id == run_id)
                               .order_by(run_metrics.c.id))
        return _record(row), [Metric(f.check_name, f.metric, f.value, f.feature)
                              for f in figures]


def newest_runs(engine: Engine, models: Sequence[str]) -> dict[str, RunRecord]:
    """Each model's check run stored last (the highest id), by model; none for a model
    without check runs."""
    c = check_runs.c
    newest = (sa.select(sa.func.max(c.id))
              .where(c.model.in_(models), c.kind == "check").group_by(c.model))
    with engine.connect() as conn:
        return {r.model: _record(r)
                for r in conn.execute(sa.select(check_runs).where(c.id.in_(newest)))}


def last_successes(engine: Engine, models: Sequence[str],
                   statuses: Iterable[str]) -> dict[str, datetime]:
    """When each model's last check run with one of ``statuses`` finished (aware UTC);
    none for a model without one."""
    c = check_runs.c
    query = (sa.select(c.model, sa.func.max(c.finished_at))
             .where(c.model.in_(models), c.kind == "check", c.status.in_(sorted(statuses)))
             .group_by(c.model))
    with engine.connect() as conn:
        return {m: at for m, v in conn.execute(query) if (at := aware(v)) is not None}


# --- the metrics scrape -------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeSnapshot:
    """What one scrape exports, read in one snapshot. ``runs``: each model's latest check
    run; ``versions``: the version the newest log of that run's window carries;
    ``counts``: check runs by model and status; ``flags``: each model's stored flag;
    ``retention``: what retention last did to each model's logs."""

    runs: dict[str, RunRecord]
    versions: dict[str, str]
    counts: dict[str, dict[str, int]]
    flags: dict[str, StoredFlag]
    retention: dict[str, RetentionRow] = field(default_factory=dict)


def scrape_snapshot(engine: Engine, models: Sequence[str], *,
                    versioned: Collection[str] = ()) -> ScrapeSnapshot:
    """The scrape's five queries on one connection, whatever the number of models, in
    one repeatable-read snapshot on PostgreSQL (so counts and the latest run agree).

    1. the latest check run of each model: its newest window, and the newest run of
       that window (a recheck of the same window wins, a recheck of an older window
       does not), as a UNION ALL of one index seek per model;
    2. for the models of ``versioned`` (those whose logs are in mqm's own table; a
       user's source is not queried at scrape time), the version of the newest log of
       that run's window, one index seek per model;
    3. check runs counted by model and status;
    4. the models' stored flags;
    5. what retention last did to each model.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                          postgresql_readonly=True)
        with conn.begin():
            return _read(conn, list(models), versioned)


def _one_per_model(parts: list[sa.Select[Any]]) -> sa.CompoundSelect[Any] | sa.Select[Any]:
    """UNION ALL of per-model ``ORDER BY ... LIMIT 1`` selects, each wrapped as a subquery
    (SQLite allows no ORDER BY/LIMIT inside a compound select)."""
    wrapped = [sa.select(*p.subquery().c) for p in parts]
    return wrapped[0] if len(wrapped) == 1 else sa.union_all(*wrapped)


def _read(conn: Connection, models: list[str], versioned: Collection[str]) -> ScrapeSnapshot:
    snap = ScrapeSnapshot(runs={}, versions={}, counts={}, flags={})
    if not models:
        return snap
    c = check_runs.c
    latest = _one_per_model([
        sa.select(c.id).where(c.model == m, c.kind == "check")
        .order_by(c.window_end.desc(), c.id.desc()).limit(1)
        for m in models
    ]).subquery()
    for r in conn.execute(sa.select(check_runs).where(c.id.in_(sa.select(latest.c.id)))):
        snap.runs[r.model] = _record(r)

    own = [m for m in snap.runs if m in versioned]
    if own:
        li = inference_logs.c
        versions = _one_per_model([
            sa.select(li.model, li.model_version)
            .where(li.model == m, li.ts >= snap.runs[m].window_start,
                   li.ts < snap.runs[m].window_end)
            .order_by(li.ts.desc()).limit(1)
            for m in own
        ])
        for r in conn.execute(versions):
            if r.model_version:
                snap.versions[r.model] = str(r.model_version)

    counts = conn.execute(
        sa.select(c.model, c.status, sa.func.count().label("n"))
        .where(c.kind == "check", c.model.in_(models)).group_by(c.model, c.status)
    )
    for r in counts:
        snap.counts.setdefault(r.model, {})[r.status] = int(r.n)

    snap.flags.update(flag_rows(conn, models))
    snap.retention.update(retention_rows(conn, models))
    return snap
