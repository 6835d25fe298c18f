"""One check run: pull a window of logs, run the checks, persist the result.

The only place that wires I/O to the pure checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from monitor.checks.schema_check import SchemaResult, check_schema
from monitor.config import Config, ModelConfig
from monitor.errors import MonitorError, first_line
from monitor.results import CheckRun, schema_metrics
from monitor.schema import ModelSchema, load_schema
from monitor.store.runs import insert_run, save_run
from monitor.store.sources import LogSource, make_source

if TYPE_CHECKING:
    from monitor.store.compaction import CompactResult

__all__ = [
    "SchemaRun",
    "aligned_window",
    "backfill",
    "compact_logs",
    "compact_quietly",
    "config_hash",
    "latest_window",
    "recompute_immature",
    "run_check",
    "run_schema_check",
    "windows_between",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_log = logging.getLogger("mqm.pipeline")


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


def config_hash(model_cfg: ModelConfig, schema: ModelSchema) -> str:
    """Identifies the settings a run used, so runs under other settings can be told apart.

    The fallback settings are left out: they act on runs, they do not shape them.
    """
    payload = json.dumps(
        {"model": model_cfg.model_dump(mode="json", exclude={"fallback"}),
         "schema": schema.model_dump(mode="json")},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def reference_version(path: Path) -> str | None:
    """Content hash of the reference file (cached per size and mtime), or None if absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


def aligned_window(end: datetime, size: timedelta) -> tuple[datetime, datetime]:
    """The window of ``size`` ending at ``end``."""
    return end - size, end


def latest_window(source: LogSource, size: timedelta) -> tuple[datetime, datetime] | None:
    """The window, aligned to multiples of ``size`` since the epoch, holding the newest log."""
    _, newest = source.time_range()
    if newest is None:
        return None
    steps = (newest - EPOCH) // size
    start = EPOCH + steps * size
    return start, start + size


def _prepare(
    engine: Engine, config: Config, model: str, at: datetime | None
) -> tuple[ModelConfig, ModelSchema, LogSource, datetime, datetime] | None:
    """Settings, contract, source and the window: the one ending at ``at``, else the
    aligned window holding the newest log (None when there are no logs)."""
    model_cfg = config.model(model)
    schema = load_schema(model_cfg.schema_path)
    source = make_source(engine, model, model_cfg.source, schema)
    if at is None:
        bounds = latest_window(source, model_cfg.window)
        if bounds is None:
            return None
    else:
        bounds = aligned_window(at, model_cfg.window)
    return model_cfg, schema, source, *bounds


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
    prepared = _prepare(engine, config, model, at)
    if prepared is None:
        return None
    model_cfg, schema, source, start, end = prepared
    started = datetime.now(UTC)
    window = source.read_window(start, end)
    result = check_schema(
        window.features,
        window.meta.get("prediction", None),
        schema,
        config=model_cfg.schema_check,
        min_rows=model_cfg.min_rows,
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
            metrics=schema_metrics(result.as_dict()),
            config_hash=config_hash(model_cfg, schema),
            reference_version=reference_version(model_cfg.reference),
            started_at=started,
            finished_at=datetime.now(UTC),
        )
    return SchemaRun(run_id=run_id, model=model, start=start, end=end, result=result)


# --- full check runs --------------------------------------------------------------


def _reference(model_cfg: ModelConfig, schema: ModelSchema) -> tuple[Any, str | None]:
    """The cached reference figures, or None and why (the run then records error sections)."""
    from monitor.run.reference import load_reference_data

    version = reference_version(model_cfg.reference)
    if version is None:
        return None, f"{model_cfg.reference}: reference set not found"
    try:
        return load_reference_data(model_cfg, schema, version), None
    except MonitorError as exc:
        return None, str(exc)


def run_check(
    engine: Engine,
    config: Config,
    model: str,
    *,
    at: datetime | None = None,
    now: datetime | None = None,
    persist: bool = True,
    recomputes: int | None = None,
    in_transaction: Callable[[Connection, int], None] | None = None,
) -> CheckRun | None:
    """Every check on the window ending at ``at`` (default: the window of the newest log).

    Stores the run, its sections and its figures, and takes the run into the model's
    fallback flag, in one transaction; then brings the flag file up to date. Returns
    None when the model has no logs at all and no ``at`` was given.

    ``in_transaction(conn, run_id)``, if given, is called in that transaction right
    after the run is inserted (before the flag takes it in); whatever it raises rolls
    the whole run back and propagates. The scheduler moves its watermark there.
    """
    from monitor.fallback.flag import flag_document, observe_run
    from monitor.policy import RunOutcome
    from monitor.run.evaluate import evaluate_window

    prepared = _prepare(engine, config, model, at)
    if prepared is None:
        return None
    model_cfg, schema, source, start, end = prepared
    started = datetime.now(UTC)
    now = now or started
    reference, reference_error = _reference(model_cfg, schema)
    run = evaluate_window(
        source, model=model, model_cfg=model_cfg, schema=schema, reference=reference,
        reference_error=reference_error, start=start, end=end, now=now,
        config_hash=config_hash(model_cfg, schema),
        # Only mqm's own table records fallback answers.
        count_fallbacks=model_cfg.source.kind == "builtin",
    )
    run = replace(run, recomputes=recomputes)
    if not persist:
        return run
    with engine.begin() as conn:
        run_id = insert_run(
            conn, model=model, kind="check", window_start=start, window_end=end,
            rows=run.rows, status=run.status, summary=run.as_dict(), metrics=run.metrics(),
            config_hash=run.config_hash, reference_version=run.reference_version,
            started_at=started, finished_at=datetime.now(UTC),
        )
        if in_transaction is not None:
            in_transaction(conn, run_id)
        observe_run(conn, config, model, RunOutcome(run_id, end, run.status, run.reasons),
                    now=now)
    if config.fallback_dir is not None:
        try:
            flag_document(engine, config, model, now)
        except MonitorError as exc:
            # The run and the flag are stored; the file catches up at the next write.
            _log.warning("mqm: %s", exc)
    return replace(run, run_id=run_id)


def compact_logs(engine: Engine, config: Config, model: str) -> CompactResult | None:
    """Copy the model's new logs and labels into log blocks (``monitor.store.compaction``);
    returns the ``CompactResult``, or None when the model's logs are not in mqm's own
    table or ``schedule.compact_every`` is null."""
    model_cfg = config.model(model)
    if model_cfg.source.kind != "builtin" or model_cfg.schedule.compact_every is None:
        return None
    from monitor.store.compaction import compact

    try:
        return compact(engine, model)
    except (sa_exc.OperationalError, sa_exc.ProgrammingError) as exc:
        raise MonitorError(f"cannot compact the logs of {model}: {first_line(exc)}") from None


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


def windows_between(since: datetime, until: datetime, size: timedelta) -> list[datetime]:
    """Ends of the aligned windows that overlap [since, until)."""
    first = EPOCH + ((since - EPOCH) // size) * size + size
    ends = []
    end = first
    while end - size < until:
        ends.append(end)
        end += size
    return ends


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
    engine: Engine, config: Config, model: str, *, now: datetime | None = None
) -> list[CheckRun]:
    """Re-run windows whose latest run judged accuracy on immature labels.

    Labels arrive days late; a window checked before they did is checked again, so
    its accuracy is judged once enough labels are in (or it is old enough). Only
    windows younger than the maximum label delay can still be immature, which bounds
    the work.
    """
    import sqlalchemy as sa

    from monitor.store.tables import check_runs, run_metrics

    model_cfg = config.model(model)
    now = now or datetime.now(UTC)
    horizon = now - model_cfg.performance.max_label_delay - model_cfg.window
    latest = (
        sa.select(sa.func.max(check_runs.c.id).label("id"))
        .where(check_runs.c.model == model, check_runs.c.kind == "check",
               check_runs.c.window_end >= horizon)
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
        stale = conn.execute(query).all()
    return [run for run_id, end in stale
            if (run := run_check(engine, config, model, at=end, now=now, recomputes=run_id))]
