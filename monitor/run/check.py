"""One check run: resolve the model, read a window of logs, run the checks, persist.

The only place that wires I/O to the pure checks: the model is resolved once
(``monitor.run.model``), the window read once, the checks run on frames
(``monitor.run.evaluate``), and the run, its figures, the scheduler's watermark and
the fallback flag are stored in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from monitor.alerting import alerts_for, post_alerts
from monitor.checks.schema_check import SchemaResult, check_schema
from monitor.config import Config
from monitor.errors import MonitorError
from monitor.results import CheckRun, schema_metrics
from monitor.run.model import ResolvedModel, config_hash, reference_version, resolve
from monitor.store.db import Engine
from monitor.store.runs import (
    insert_run,
    label_mark,
    labels_arrived,
    recheck_candidates,
    save_run,
)
from monitor.store.sources import LogSource
from monitor.times import window_ending, window_holding, windows_between

if TYPE_CHECKING:
    from monitor.store.compaction import CompactResult
    from monitor.store.locks import Fence

__all__ = [
    "SchemaRun",
    "aligned_window",
    "backfill",
    "compact_logs",
    "compact_quietly",
    "config_hash",
    "latest_window",
    "recompute_immature",
    "reference_version",
    "run_check",
    "run_schema_check",
    "windows_between",
]

_log = logging.getLogger("mqm.pipeline")

aligned_window = window_ending


@dataclass(frozen=True)
class SchemaRun:
    run_id: int | None
    model: str
    start: datetime
    end: datetime
    result: SchemaResult

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            **self.result.as_dict(),
        }


def latest_window(source: LogSource, size: timedelta) -> tuple[datetime, datetime] | None:
    """The window, aligned to multiples of ``size`` since the epoch, holding the newest log."""
    _, newest = source.time_range()
    return None if newest is None else window_holding(newest, size)


def _window(model: ResolvedModel, at: datetime | None) -> tuple[datetime, datetime] | None:
    """The window ending at ``at``, else the aligned window holding the newest log (None
    when there are no logs)."""
    if at is None:
        return latest_window(model.source, model.config.window)
    return window_ending(at, model.config.window)


def run_schema_check(
    engine: Engine,
    config: Config,
    model: str,
    *,
    at: datetime | None = None,
    persist: bool = True,
) -> SchemaRun | None:
    """Schema check of the window ending at ``at`` (default: the latest window).

    Returns None when the model has no logs at all.
    """
    resolved = resolve(engine, config, model)
    bounds = _window(resolved, at)
    if bounds is None:
        return None
    start, end = bounds
    started = datetime.now(UTC)
    window = resolved.source.read_window(start, end)
    result = check_schema(
        window.features,
        None if resolved.schema.features_only else window.meta.get("prediction", None),
        resolved.schema,
        config=resolved.config.schema_check,
        min_rows=resolved.config.min_rows,
    )
    run_id = None
    if persist:
        run_id = save_run(
            engine,
            model=model,
            kind="schema",
            window_start=start,
            window_end=end,
            rows=result.rows,
            status=result.status,
            summary=result.as_dict(),
            metrics=schema_metrics(result),
            config_hash=resolved.config_hash,
            reference_version=resolved.reference_version,
            started_at=started,
            finished_at=datetime.now(UTC),
        )
    return SchemaRun(run_id=run_id, model=model, start=start, end=end, result=result)


# --- full check runs --------------------------------------------------------------


def run_check(
    engine: Engine,
    config: Config,
    model: str,
    *,
    at: datetime | None = None,
    now: datetime | None = None,
    persist: bool = True,
    recomputes: int | None = None,
    expect_watermark: datetime | None = None,
    fence: Fence | None = None,
) -> CheckRun | None:
    """Every check on the window ending at ``at`` (default: the window of the newest log).

    Stores the run, its sections and its figures, and takes the run into the model's
    fallback flag, in one transaction; then brings the flag file up to date. Returns
    None when the model has no logs at all and no ``at`` was given.

    Guards, each checked in that transaction (a refused run stores nothing):

    * ``expect_watermark``: the scheduler's watermark this run moves on to the window's
      end, compare-and-set; ``WatermarkMoved`` when another writer moved it first.
    * ``recomputes``: the run this one recomputes (a recheck); it must still be the
      window's latest check run, and recomputed by no one else
      (``monitor.store.watermarks.mark_run``); ``RunSuperseded`` otherwise.
    * ``fence``: the lease the scheduler works under; ``LeaseLost`` when another replica
      took the model over meanwhile (``monitor.store.locks.check_fence``).

    While the window is young enough to wait for labels, the run records what it knew of
    them before it read them (``monitor.store.runs.LabelMark``), so that a recheck runs
    again only once new ones arrived.
    """
    from monitor.fallback.flag import flag_document, observe_run
    from monitor.policy import RunOutcome
    from monitor.run.evaluate import evaluate_window
    from monitor.store.locks import bound_transaction, check_fence
    from monitor.store.watermarks import advance_watermark, mark_run

    resolved = resolve(engine, config, model)
    bounds = _window(resolved, at)
    if bounds is None:
        return None
    start, end = bounds
    started = datetime.now(UTC)
    now = now or started
    labels = None
    # A features-only model has no labels to wait for: its runs are never rechecked.
    if (persist and not resolved.schema.features_only
            and now - end < resolved.config.performance.max_label_delay):
        # Before the read: a label that lands in between is read, and seen as new later.
        labels = label_mark(engine, model, start, end,
                            own_table=resolved.config.source.kind == "builtin")
    run = evaluate_window(resolved, start=start, end=end, now=now)
    run = replace(run, recomputes=recomputes)
    if not persist:
        return run
    # Read before the transaction that stores the run: it needs no lock.
    advice = _rollback_advice(engine, config, model, run)
    with engine.begin() as conn:
        if fence is not None:  # a stale holder is refused before it touches a row
            bound_transaction(conn, fence)
            check_fence(conn, fence)
        run_id = insert_run(
            conn, model=model, kind="check", window_start=start, window_end=end,
            rows=run.rows, status=run.status, summary=run.as_dict(), metrics=run.metrics(),
            config_hash=run.config_hash, reference_version=run.reference_version,
            started_at=started, finished_at=datetime.now(UTC),
        )
        mark_run(conn, model=model, run_id=run_id, window_end=end, recomputes=recomputes,
                 labels=labels)
        if expect_watermark is not None:
            advance_watermark(conn, model, expected=expect_watermark, end=end, run_id=run_id,
                              now=now)
        observe_run(conn, config, model,
                    RunOutcome(run_id, end, run.status, run.reasons, advice=advice),
                    now=now)
        if fence is not None:  # again last: the shortest time between check and commit
            check_fence(conn, fence)
    if config.fallback_dir is not None or config.alerting.alertmanager_url:
        try:
            doc = flag_document(engine, config, model, now)
        except MonitorError as exc:
            # The run and the flag are stored; the file catches up at the next write.
            _log.warning("mqm: %s", exc)
        else:
            post_alerts(config.alerting, resolved.config,
                        alerts_for(model, doc, run.status, run.reasons), now)
    return replace(run, run_id=run_id)


_ADVICE_WINDOWS = 90  # windows back that rollback advice looks at


def _rollback_advice(engine: Engine, config: Config, model: str, run: CheckRun) -> str | None:
    """Rollback advice for a run that could trip the flag (a bad status, and versions
    measured), from the stored windows before it (the last ``_ADVICE_WINDOWS``) and its own
    versions. Advice only: a failure to work it out is logged and the run goes on
    without it."""
    from monitor.fallback.flag import rules_of
    from monitor.results import VersionsResult

    model_cfg = config.model(model)
    section = run.section("versions")
    if (run.status not in rules_of(model_cfg).bad_statuses
            or not isinstance(section, VersionsResult) or not section.versions):
        return None
    try:
        from monitor.results import version_metrics
        from monitor.rollback import VersionWindow, rollback_advice
        from monitor.store.versions import version_windows

        since = run.start - _ADVICE_WINDOWS * model_cfg.window
        rows = version_windows(engine, model, since=since, until=run.start)
        own: dict[str, dict[str, float | None]] = {}
        for metric in version_metrics(section):
            if metric.feature:
                own.setdefault(metric.feature, {})[metric.metric] = metric.value
        rows += [VersionWindow(0, run.start, run.end, run.status, section.mature, version,
                               figures) for version, figures in own.items()]
        return rollback_advice(rows, [v.version for v in section.versions])
    except Exception as exc:
        _log.warning("mqm: rollback advice for %s could not be worked out: %s", model,
                     exc if isinstance(exc, MonitorError) else f"{type(exc).__name__}: {exc}",
                     exc_info=not isinstance(exc, MonitorError))
        return None


def compact_logs(engine: Engine, config: Config, model: str,
                 fence: Fence | None = None) -> CompactResult | None:
    """Copy the model's new logs and labels into log blocks (``monitor.store.compaction``);
    returns the ``CompactResult``, or None when the model's logs are not in mqm's own
    table or ``schedule.compact_every`` is null. ``fence``: as ``compact``'s."""
    if not config.model(model).compacted:
        return None
    from monitor.store.compaction import compact_or_fail

    return compact_or_fail(engine, model, fence)


def compact_quietly(engine: Engine, config: Config, model: str) -> CompactResult | None:
    """``compact_logs``, logging a failure instead of raising it: blocks only make reads
    faster, and without them the checks read the rows."""
    try:
        return compact_logs(engine, config, model)
    except Exception as exc:
        _log.warning("mqm: %s", exc if isinstance(exc, MonitorError) else
                     f"compacting the logs of {model} failed: {type(exc).__name__}: {exc}",
                     exc_info=not isinstance(exc, MonitorError))
        return None


def backfill(
    engine: Engine,
    config: Config,
    model: str,
    since: datetime,
    until: datetime,
    *,
    now: datetime | None = None,
    progress: Callable[[CheckRun], None] | None = None,
) -> list[CheckRun]:
    """Check every aligned window between ``since`` and ``until``, oldest first.

    New logs go into log blocks first, so that each window reads fast.
    """
    compact_quietly(engine, config, model)
    runs = []
    for end in windows_between(since, until, config.model(model).window):
        run = run_check(engine, config, model, at=end, now=now)
        assert run is not None
        runs.append(run)
        if progress:
            progress(run)
    return runs


def recompute_immature(
    engine: Engine,
    config: Config,
    model: str,
    *,
    now: datetime | None = None,
    fence: Fence | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> list[CheckRun]:
    """Re-run windows whose latest run judged accuracy on immature labels, once that can
    change the verdict: when labels of the window arrived since that run, or the window
    has since become old enough to be mature whatever its labels.

    Labels arrive days late; a window checked before they did is checked again, so its
    accuracy is judged once enough labels are in (or it is old enough). Only windows
    younger than the maximum label delay (plus one window) can still be immature, which
    bounds the work. New logs and labels go into log blocks first. Each rerun is guarded
    like a check (``run_check``'s ``recomputes``
    and ``fence``): a run that another writer recomputed first is skipped
    (``RunSuperseded``, logged); ``LeaseLost`` stops the recheck. ``keep_going`` is asked
    before each window; False stops.
    """
    from monitor.store.watermarks import RunSuperseded

    model_cfg = config.model(model)
    now = now or datetime.now(UTC)
    delay = model_cfg.performance.max_label_delay
    horizon = now - delay - model_cfg.window
    # New labels into the log blocks first: each rerun then records their high-water, so
    # that the labels it read do not count as new at the next recheck.
    compact_quietly(engine, config, model)
    runs = []
    for window in recheck_candidates(engine, model, horizon):
        if keep_going is not None and not keep_going():
            break
        if now - window.end < delay and window.labels is not None:
            # Not yet mature by age: only new labels can change the verdict.
            start, end = window_ending(window.end, model_cfg.window)
            if not labels_arrived(engine, model, start, end, window.labels):
                continue
        try:
            run = run_check(engine, config, model, at=window.end, now=now,
                            recomputes=window.run_id, fence=fence)
        except RunSuperseded as exc:
            _log.info("mqm: %s", exc)
            continue
        if run is not None:
            runs.append(run)
    return runs
