"""`mqm demo`: load the sample model's logs and labels, then check them day by day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from monitor.config import Config
from monitor.errors import MonitorError
from monitor.ingest import IngestReport, ingest_labels, ingest_logs
from monitor.pipeline import EPOCH, latest_window, run_schema_check
from monitor.schema import load_schema
from monitor.store.db import safe_url
from monitor.store.sources import make_source

__all__ = ["run_demo"]

DEMO_MODEL = "loan_default"


def run_demo(
    config: Config, engine: Engine, data: Path | None, *, echo: Callable[[str], None] = print
) -> list[str]:
    """Ingest ``sample_data/`` (idempotent) and run the schema check on each day.

    Returns the statuses by day, oldest first.
    """
    model_cfg = config.model(DEMO_MODEL)
    folder = data or model_cfg.reference.parent
    logs, labels = folder / "production_logs.parquet", folder / "labels.parquet"
    for path in (logs, labels):
        if not path.exists():
            raise MonitorError(f"{path}: sample file not found (python sample_data/generate.py)")
    schema = load_schema(model_cfg.schema_path)
    echo(f"database: {safe_url(config.database_url)}")
    report = ingest_logs(engine, DEMO_MODEL, schema, logs, default_version=model_cfg.version)
    echo(f"logs:   {_counts(report)}")
    report = ingest_labels(engine, DEMO_MODEL, schema, labels)
    echo(f"labels: {_counts(report)}")

    source = make_source(engine, DEMO_MODEL, model_cfg.source, schema)
    first, _ = source.time_range()
    last = latest_window(source, model_cfg.window)
    assert first is not None and last is not None
    size = model_cfg.window
    end = EPOCH + ((first - EPOCH) // size + 1) * size
    echo("")
    echo(f"schema check per {_human(size)} window against {model_cfg.schema_path.name}:")
    echo(f"  {'window end (UTC)':<18}{'rows':>7}{'violations':>12}  {'status':<10}why")
    statuses = []
    while end <= last[1]:
        run = run_schema_check(engine, config, DEMO_MODEL, at=end)
        assert run is not None
        res = run.result
        why = "; ".join(res.reasons[:2]) if res.status != "ok" else ""
        echo(f"  {end:%Y-%m-%d %H:%M}  {res.rows:>7}{res.violation_rate:>12.2%}  "
             f"{res.status:<10}{why[:110]}")
        statuses.append(res.status)
        end += size
    bad = sum(s in ("warn", "critical") for s in statuses)
    echo("")
    echo(f"{len(statuses)} windows checked, {bad} with schema problems; runs are stored in "
         "check_runs (see `mqm schema check --model loan_default --json`).")
    return statuses


def _counts(report: IngestReport) -> str:
    return f"{report.rows} read, {report.added} added, {report.already_stored} already stored"


def _human(size: timedelta) -> str:
    seconds = int(size.total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"
