"""What the dashboard reads: a model's windows over a time range, their figures in bulk,
the recent windows and last success of every model, and a bounded sample of one window.

Every function reads the store only (SQLAlchemy Core, SQLite and PostgreSQL alike) and
returns small typed rows; what they mean on a page is the dashboard's business. A window
is judged by its **latest** check run (a recheck replaces the first verdict), as the
fallback policy and the metrics do.

Driver errors leave as ``DatabaseError`` with one line naming the store (``reading``), so
that a reader outside ``monitor.store`` never needs SQLAlchemy to tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.errors import DatabaseError, first_line
from monitor.policy import SUCCESSFUL_STATUSES
from monitor.results import CheckRun
from monitor.store.db import safe_url
from monitor.store.flags import FallbackEvent, list_events
from monitor.store.runs import get_run
from monitor.store.tables import check_runs, run_metrics
from monitor.times import aware

if TYPE_CHECKING:
    import pandas as pd

    from monitor.store.sources import LogSource

__all__ = [
    "BucketFigure",
    "FeatureTotal",
    "Figure",
    "WindowFigures",
    "WindowRun",
    "WindowSample",
    "feature_buckets",
    "feature_totals",
    "figures_of",
    "last_successes",
    "reading",
    "recent_events",
    "recent_windows",
    "run_settings",
    "window_figures",
    "window_runs",
    "window_sample",
    "window_table",
]


@dataclass(frozen=True)
class WindowRun:
    """The latest check run of one window, without its document."""

    id: int
    model: str
    window_start: datetime
    window_end: datetime
    rows: int
    status: str
    finished_at: datetime
    config_hash: str
    reference_version: str | None


@dataclass(frozen=True)
class Figure:
    """One ``run_metrics`` row: a figure of a run (``feature`` empty for whole-window ones)."""

    run_id: int
    check: str
    metric: str
    feature: str
    value: float | None


@dataclass(frozen=True)
class WindowFigures:
    """Whole-window figures of one run, by (check, metric); None where absent or null."""

    run_id: int
    values: dict[tuple[str, str], float | None]


@dataclass(frozen=True)
class BucketFigure:
    """One per-feature figure summed up over the windows of one bucket: a run of
    consecutive windows (see ``feature_buckets``)."""

    bucket: int
    feature: str
    metric: str
    max: float | None
    min: float | None
    count: int
    sum: float | None


@dataclass(frozen=True)
class FeatureTotal:
    """One feature's figure over many windows: the largest, the mean over the windows that
    have it, and in how many windows it was above zero."""

    feature: str
    max: float | None
    mean: float | None
    windows: int
    nonzero_windows: int


@dataclass(frozen=True)
class WindowSample:
    """At most the asked number of rows of one window, drawn uniformly: the requested
    feature columns as received, and the prediction under the name asked for."""

    frame: pd.DataFrame
    window_rows: int

    @property
    def sampled(self) -> bool:
        return len(self.frame) < self.window_rows


@contextmanager
def reading(engine: Engine) -> Iterator[None]:
    """Driver errors (the store down, a table missing) as one-line ``DatabaseError``s."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read the store at {safe_url(str(engine.url))}: "
                            f"{first_line(exc)}") from None


_WINDOW_COLUMNS = ("id", "model", "window_start", "window_end", "rows", "status",
                   "finished_at", "config_hash", "reference_version")


def _at(value: Any) -> datetime:
    """A time from a NOT NULL column, as aware UTC."""
    out = aware(value)
    if out is None:
        raise ValueError("a NOT NULL time column held null")
    return out


def _window_run(row: Any) -> WindowRun:
    m = row._mapping
    return WindowRun(id=int(m["id"]), model=m["model"], window_start=_at(m["window_start"]),
                     window_end=_at(m["window_end"]), rows=int(m["rows"]),
                     status=m["status"], finished_at=_at(m["finished_at"]),
                     config_hash=m["config_hash"], reference_version=m["reference_version"])


def _latest_ids(model: str, since: datetime | None, until: datetime | None) -> sa.Select[Any]:
    """Ids of the latest check run of each window of ``model`` ending in (since, until]."""
    c = check_runs.c
    query = sa.select(sa.func.max(c.id)).where(c.model == model, c.kind == "check")
    if since is not None:
        query = query.where(c.window_end > since)
    if until is not None:
        query = query.where(c.window_end <= until)
    return query.group_by(c.window_end)


def window_runs(engine: Engine, model: str, *, since: datetime | None = None,
                until: datetime | None = None) -> list[WindowRun]:
    """The latest check run of each window of ``model`` ending in (since, until] (None: no
    bound), oldest window first."""
    c = check_runs.c
    query = (sa.select(*(c[name] for name in _WINDOW_COLUMNS))
             .where(c.id.in_(_latest_ids(model, since, until))).order_by(c.window_end))
    with reading(engine), engine.connect() as conn:
        return [_window_run(r) for r in conn.execute(query)]


def recent_windows(engine: Engine, models: Sequence[str], *, per_model: int
                   ) -> dict[str, list[WindowRun]]:
    """Each model's latest ``per_model`` windows (their latest check run), newest first;
    a model without runs is absent."""
    if not models or per_model < 1:
        return {}
    c = check_runs.c
    # Rank ids only: the columns stored after the run's document (config hash, times)
    # would drag its overflow pages in for every run of every model on SQLite.
    ranked = (
        sa.select(
            c.id,
            sa.func.row_number().over(partition_by=(c.model, c.window_end),
                                      order_by=c.id.desc()).label("nth_run"),
            sa.func.dense_rank().over(partition_by=c.model,
                                      order_by=c.window_end.desc()).label("nth_window"),
        )
        .where(c.kind == "check", c.model.in_(list(models)))
        .subquery()
    )
    chosen = sa.select(ranked.c.id).where(ranked.c.nth_run == 1,
                                          ranked.c.nth_window <= per_model)
    query = (sa.select(*(c[name] for name in _WINDOW_COLUMNS)).where(c.id.in_(chosen))
             .order_by(c.model, c.window_end.desc()))
    out: dict[str, list[WindowRun]] = {}
    with reading(engine), engine.connect() as conn:
        for row in conn.execute(query):
            run = _window_run(row)
            out.setdefault(run.model, []).append(run)
    return out


def last_successes(engine: Engine, models: Sequence[str]) -> dict[str, WindowRun]:
    """Each model's newest successful check run (status ok, warn or critical); a model
    that never had one is absent."""
    if not models:
        return {}
    c = check_runs.c
    newest = (sa.select(sa.func.max(c.id))
              .where(c.kind == "check", c.model.in_(list(models)),
                     c.status.in_(sorted(SUCCESSFUL_STATUSES)))
              .group_by(c.model))
    query = sa.select(*(c[name] for name in _WINDOW_COLUMNS)).where(c.id.in_(newest))
    with reading(engine), engine.connect() as conn:
        return {run.model: run for run in map(_window_run, conn.execute(query))}


def _figures_query(runs: sa.Select[Any] | Sequence[int], *, checks: Iterable[str] | None,
                   metrics: Iterable[str] | None, per_feature: bool | None) -> sa.Select[Any]:
    m = run_metrics.c
    query = sa.select(m.run_id, m.check_name, m.metric, m.feature, m.value).where(
        m.run_id.in_(runs if isinstance(runs, sa.Select) else list(runs)))
    if checks is not None:
        query = query.where(m.check_name.in_(list(checks)))
    if metrics is not None:
        query = query.where(m.metric.in_(list(metrics)))
    if per_feature is True:
        query = query.where(m.feature != "")
    elif per_feature is False:
        query = query.where(m.feature == "")
    return query


def _figures(engine: Engine, query: sa.Select[Any]) -> list[Figure]:
    with reading(engine), engine.connect() as conn:
        return [Figure(int(run_id), check, metric, feature, value)
                for run_id, check, metric, feature, value in conn.execute(query)]


def window_figures(engine: Engine, model: str, *, since: datetime | None = None,
                   until: datetime | None = None, checks: Iterable[str] | None = None,
                   metrics: Iterable[str] | None = None,
                   per_feature: bool | None = None) -> list[Figure]:
    """The figures of the windows of ``window_runs(model, since, until)`` in one query:
    only those of ``checks`` and ``metrics`` when given, only per-feature ones
    (``per_feature=True``) or only whole-window ones (``False``). Unordered."""
    return _figures(engine, _figures_query(_latest_ids(model, since, until), checks=checks,
                                           metrics=metrics, per_feature=per_feature))


def window_table(engine: Engine, model: str, figures: Sequence[tuple[str, str]], *,
                 since: datetime | None = None, until: datetime | None = None
                 ) -> list[WindowFigures]:
    """The whole-window ``figures`` ((check, metric) pairs) of each window of
    ``window_runs(model, since, until)``, one row per run: pivoted in SQL (one
    conditional aggregate per figure), so a page drawing thousands of windows reads one
    row per window, not one per figure. Unordered."""
    m = run_metrics.c
    pairs = list(dict.fromkeys(figures))
    if not pairs:
        return []
    columns = [sa.func.max(sa.case((sa.and_(m.check_name == check, m.metric == metric),
                                    m.value))) for check, metric in pairs]
    query = (sa.select(m.run_id, *columns)
             .where(m.run_id.in_(_latest_ids(model, since, until)),
                    m.check_name.in_(sorted({c for c, _ in pairs})),
                    m.metric.in_(sorted({n for _, n in pairs})), m.feature == "")
             .group_by(m.run_id))
    with reading(engine), engine.connect() as conn:
        return [WindowFigures(int(row[0]), dict(zip(pairs, row[1:], strict=True)))
                for row in conn.execute(query)]


_IDS_PER_QUERY = 500  # under SQLite's oldest limit of 999 parameters


def figures_of(engine: Engine, run_ids: Iterable[int], *, checks: Iterable[str] | None = None,
               metrics: Iterable[str] | None = None,
               per_feature: bool | None = None) -> list[Figure]:
    """The figures of the runs ``run_ids`` (of any models), filtered as by
    ``window_figures``; one query per 500 runs. Unordered."""
    ids = sorted(set(run_ids))
    checks = None if checks is None else list(checks)
    metrics = None if metrics is None else list(metrics)
    out: list[Figure] = []
    for i in range(0, len(ids), _IDS_PER_QUERY):
        out += _figures(engine, _figures_query(ids[i:i + _IDS_PER_QUERY], checks=checks,
                                               metrics=metrics, per_feature=per_feature))
    return out


def feature_buckets(engine: Engine, model: str, bounds: Sequence[datetime], *,
                    since: datetime | None = None, check: str = "drift",
                    metrics: Iterable[str] | None = None) -> list[BucketFigure]:
    """Per-feature figures of the windows of ``window_runs(model, since, bounds[-1])``
    summed up in SQL per bucket of consecutive windows: bucket ``i`` holds the windows
    ending in (bounds[i-1], bounds[i]] (bucket 0: up to bounds[0]). Per (bucket, feature,
    metric): largest, smallest, count and sum of the values. A heat-map of thousands of
    windows reads a few thousand rows this way instead of every figure."""
    if not bounds:
        return []
    c, m = check_runs.c, run_metrics.c
    ordered = sorted(bounds)
    # The bucket of each window: a CASE over the bounds, evaluated once per run in a
    # MATERIALIZED CTE (SQLite >= 3.35, PostgreSQL >= 12): flattened into the join, it
    # would be evaluated once per figure, 4x slower.
    bucket = sa.case(*[(c.window_end <= b, i) for i, b in enumerate(ordered)],
                     else_=len(ordered))
    buckets = (sa.select(c.id.label("run_id"), bucket.label("bucket"))
               .where(c.id.in_(_latest_ids(model, since, ordered[-1])))
               .cte("buckets").prefix_with("MATERIALIZED"))
    query = (
        sa.select(buckets.c.bucket, m.feature, m.metric, sa.func.max(m.value),
                  sa.func.min(m.value), sa.func.count(m.value), sa.func.sum(m.value))
        .select_from(buckets.join(run_metrics, run_metrics.c.run_id == buckets.c.run_id))
        .where(m.check_name == check, m.feature != "")
        .group_by(buckets.c.bucket, m.feature, m.metric)
    )
    if metrics is not None:
        query = query.where(m.metric.in_(list(metrics)))
    with reading(engine), engine.connect() as conn:
        return [BucketFigure(int(b), feature, metric,
                             None if high is None else float(high),
                             None if low is None else float(low), int(count),
                             None if total is None else float(total))
                for b, feature, metric, high, low, count, total in conn.execute(query)]


def feature_totals(engine: Engine, model: str, check: str, metric: str, *,
                   since: datetime | None = None, until: datetime | None = None,
                   limit: int | None = None) -> list[FeatureTotal]:
    """One per-feature figure summed up over the windows of ``window_runs(model, since,
    until)``, computed in SQL: largest first (then by name), at most ``limit``."""
    m = run_metrics.c
    largest = sa.func.max(m.value)
    query = (
        sa.select(m.feature, largest, sa.func.avg(m.value), sa.func.count(m.value),
                  sa.func.sum(sa.case((m.value > 0, 1), else_=0)))
        .where(m.run_id.in_(_latest_ids(model, since, until)), m.check_name == check,
               m.metric == metric, m.feature != "")
        .group_by(m.feature)
        .order_by(largest.desc(), m.feature)
    )
    if limit is not None:
        query = query.limit(limit)
    with reading(engine), engine.connect() as conn:
        return [FeatureTotal(feature, None if high is None else float(high),
                             None if mean is None else float(mean), int(count),
                             int(nonzero or 0))
                for feature, high, mean, count, nonzero in conn.execute(query)]


def run_settings(engine: Engine, runs: Iterable[WindowRun]) -> dict[tuple[str, str | None],
                                                                     CheckRun]:
    """For each (config hash, reference version) among ``runs``, the typed newest run
    of them: what its windows were judged against (drift methods and thresholds, the
    drifted-share limit, the reference's metrics). One document read per pair."""
    newest: dict[tuple[str, str | None], int] = {}
    for run in runs:
        key = (run.config_hash, run.reference_version)
        newest[key] = max(newest.get(key, run.id), run.id)
    out: dict[tuple[str, str | None], CheckRun] = {}
    with reading(engine):
        for key, run_id in newest.items():
            record = get_run(engine, run_id)
            typed = None if record is None else record.run
            if typed is not None:
                out[key] = typed
    return out


def recent_events(engine: Engine, model: str, *, limit: int = 50) -> list[FallbackEvent]:
    """``list_events`` (newest first), its driver errors as ``DatabaseError``."""
    with reading(engine):
        return list_events(engine, model, limit=limit)


def window_sample(source: LogSource, start: datetime, end: datetime, *,
                  columns: Sequence[str], prediction: str | None = None, rows: int = 5_000,
                  seed: int = 0, chunk_rows: int = 50_000) -> WindowSample:
    """``rows`` rows of the window [start, end) drawn uniformly without replacement
    (seeded: the same rows again for the same seed), read a chunk at a time so memory
    stays bounded by the chunk; all of them when the window has no more. The ``columns``
    among the features (a column absent from the window is all null), and the
    prediction as ``prediction`` when named."""
    import numpy as np
    import pandas as pd

    total = source.count(start, end)
    # Positions drawn up front; each chunk keeps those that fall in it.
    chosen = (None if total <= rows else
              np.sort(np.random.default_rng(seed).choice(total, size=rows, replace=False)))
    names = [c for c in columns if c != prediction]
    if prediction is not None:
        names.append(prediction)
    pieces: dict[str, list[Any]] = {c: [] for c in names}
    offset = 0
    for window in source.iter_chunks(start, end, chunk_rows):
        if chosen is None:
            keep = np.arange(window.rows)
        else:
            lo, hi = np.searchsorted(chosen, [offset, offset + window.rows])
            keep = chosen[lo:hi] - offset
        offset += window.rows
        for c in names:
            if c == prediction:
                values = window.meta["prediction"].to_numpy(dtype=object)
            elif c in window.features:
                values = window.features[c].to_numpy(dtype=object)
            else:
                values = np.full(window.rows, None, dtype=object)
            pieces[c].append(values[keep])
    # Object columns joined by numpy: values stay as received, and pandas has no
    # all-null chunk to warn about.
    frame = pd.DataFrame({c: np.concatenate(p) if p else np.empty(0, dtype=object)
                          for c, p in pieces.items()})
    return WindowSample(frame=frame, window_rows=total)
