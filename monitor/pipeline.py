"""One check run: pull a window of logs, run the checks, persist the result.

The only place that wires I/O to the pure checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from sqlalchemy.engine import Engine

from monitor.checks.schema_check import SchemaResult, check_schema
from monitor.config import Config, ModelConfig
from monitor.schema import ModelSchema, load_schema
from monitor.store.runs import Metric, save_run
from monitor.store.sources import LogSource, make_source

__all__ = ["SchemaRun", "aligned_window", "config_hash", "latest_window", "run_schema_check"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    """Identifies the settings a run used, so runs under other settings can be told apart."""
    payload = json.dumps(
        {"model": model_cfg.model_dump(mode="json"), "schema": schema.model_dump(mode="json")},
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


def schema_metrics(result: SchemaResult) -> list[Metric]:
    metrics = [
        Metric("schema", "violation_rate", result.violation_rate),
        Metric("schema", "missing_columns", float(len(result.missing_columns))),
        Metric("schema", "unexpected_columns", float(len(result.unexpected_columns))),
    ]
    for col in result.columns:
        if col.state != "present":
            continue
        for name in ("null_rate", "type_mismatch_rate", "out_of_range_rate",
                     "unseen_category_rate", "violation_rate"):
            metrics.append(Metric("schema", name, getattr(col, name), col.column))
    return metrics


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
    model_cfg = config.model(model)
    schema = load_schema(model_cfg.schema_path)
    source = make_source(engine, model, model_cfg.source, schema)
    if at is None:
        bounds = latest_window(source, model_cfg.window)
        if bounds is None:
            return None
        start, end = bounds
    else:
        start, end = aligned_window(at, model_cfg.window)
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
            metrics=schema_metrics(result),
            config_hash=config_hash(model_cfg, schema),
            reference_version=reference_version(model_cfg.reference),
            started_at=started,
            finished_at=datetime.now(UTC),
        )
    return SchemaRun(run_id=run_id, model=model, start=start, end=end, result=result)
