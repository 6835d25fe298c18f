"""`mqm demo`: load the sample model's logs and labels, then check them day by day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from monitor.config import Config
from monitor.errors import MonitorError
from monitor.ingest import IngestReport, ingest_labels, ingest_logs
from monitor.results import CheckRun
from monitor.run.check import backfill
from monitor.run.model import resolve
from monitor.store.db import Engine, safe_url

__all__ = ["run_demo"]

DEMO_MODEL = "loan_default"


def run_demo(
    config: Config, engine: Engine, data: Path | None, *, echo: Callable[[str], None] = print
) -> list[CheckRun]:
    """Ingest ``sample_data/`` (idempotent) and run every check on each day, oldest first."""
    model_cfg = config.model(DEMO_MODEL)
    folder = data or model_cfg.reference.parent
    logs, labels = folder / "production_logs.parquet", folder / "labels.parquet"
    for path in (logs, labels):
        if not path.exists():
            raise MonitorError(f"{path}: sample file not found (python sample_data/generate.py)")
    model = resolve(engine, config, DEMO_MODEL)
    schema = model.schema
    echo(f"database: {safe_url(config.database_url)}")
    report = ingest_logs(engine, DEMO_MODEL, schema, logs, default_version=model_cfg.version)
    echo(f"logs:   {_counts(report)}")
    report = ingest_labels(engine, DEMO_MODEL, schema, labels)
    echo(f"labels: {_counts(report)}")

    first, last = model.source.time_range()
    assert first is not None and last is not None
    echo("")
    echo(f"checking each {_human(model_cfg.window)} window from {first:%Y-%m-%d} to "
         f"{last:%Y-%m-%d} (schema, drift, accuracy with late labels, estimated accuracy, "
         "service health" + (", multivariate drift" if model_cfg.multivariate.enabled else "")
         + "):")
    return backfill(engine, config, DEMO_MODEL, first, last + timedelta(microseconds=1))


def _counts(report: IngestReport) -> str:
    return f"{report.rows} read, {report.added} added, {report.already_stored} already stored"


def _human(size: timedelta) -> str:
    seconds = int(size.total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"
