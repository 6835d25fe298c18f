"""Multivariate drift in a check run, on both backends: a window whose two correlated
features flip their correlation passes every univariate test and warns here with the pair
named; a clean window stays ok; the run goes through the store and back; a window too small
for the check is insufficient data, not an error that moves the flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

from monitor.config import load_config
from monitor.fallback.flag import flag_document
from monitor.ingest import ingest_logs
from monitor.results import CheckRun, DriftResult, MultivariateResult
from monitor.run.check import backfill
from monitor.schema import load_schema
from monitor.store.runs import latest_runs, run_metrics_of
from tests.conftest import write_csv

MODEL = "pairs"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def rows(rows: int, rho: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    xy = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=rows)
    return pd.DataFrame({"x1": xy[:, 0], "x2": xy[:, 1], "x3": rng.normal(size=rows),
                         "kind": rng.choice(["a", "b", "c"], size=rows)})


def model_folder(folder: Path, database_url: str) -> Path:
    contract = {"model": MODEL, "task": "features", "features": [
        *({"name": n, "type": "float", "nullable": False} for n in ("x1", "x2", "x3")),
        {"name": "kind", "type": "category", "nullable": False,
         "allowed": ["a", "b", "c"]}]}
    (folder / "pairs.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    rows(4000, 0.8, 0).to_parquet(folder / "reference.parquet")
    settings = {"schema": str(folder / "pairs.yaml"),
                "reference": str(folder / "reference.parquet"), "window": "1d",
                "min_rows": 50, "multivariate": {"enabled": True}}
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": database_url,
                                    "models": {MODEL: settings}}), encoding="utf-8")
    return path


def load_days(engine: sa.Engine, folder: Path, days: list[tuple[int, float]]) -> Path:
    """One day of logs per (rows, correlation) from T0, ingested; returns the config."""
    config = model_folder(folder, engine.url.render_as_string(hide_password=False))
    logs: list[dict[str, Any]] = []
    for d, (count, rho) in enumerate(days):
        day = T0 + d * DAY
        for i, values in enumerate(rows(count, rho, d + 1).to_dict("records")):
            at = datetime.fromtimestamp(day.timestamp() + i * 86400 / count, UTC)
            logs.append({"request_id": f"{d}-{i}",
                         "timestamp": at.isoformat().replace("+00:00", "Z"),
                         **values, "latency_ms": 10.0})
    schema = load_schema(load_config(config).model(MODEL).schema_path)
    ingest_logs(engine, MODEL, schema, write_csv(folder / "logs.csv", logs))
    return config


def test_a_correlation_flip_passes_univariate_drift_and_warns_here(
        engine: sa.Engine, tmp_path: Path) -> None:
    config = load_config(load_days(engine, tmp_path, [(1500, 0.8), (1500, -0.8), (120, -0.8)]))
    clean, flipped, small = backfill(engine, config, MODEL, T0, T0 + 3 * DAY,
                                     now=T0 + 4 * DAY)

    # Every column passes its own test in the flipped window: the marginals did not move.
    drift = flipped.drift
    assert isinstance(drift, DriftResult) and drift.status == "ok"
    assert [f.feature for f in drift.features] == ["x1", "x2", "x3", "kind"]
    assert not any(f.drifted for f in drift.features) and not drift.dataset_drift

    section = flipped.multivariate
    assert isinstance(section, MultivariateResult) and section.status == "warn"
    assert section.auc is not None and section.auc > config.model(
        MODEL).multivariate.auc_threshold
    assert {f.feature for f in section.top_features[:2]} == {"x1", "x2"}
    assert (section.rows_reference, section.rows_current) == (4000, 1500)
    assert flipped.status == "warn"
    (reason,) = flipped.reasons
    assert reason.startswith(f"multivariate: domain classifier AUC {section.auc:.3f}")
    assert "x1 (" in reason and "x2 (" in reason

    # The clean window: no verdict, an AUC near 0.5 whose interval holds it.
    quiet = clean.multivariate
    assert isinstance(quiet, MultivariateResult) and quiet.status == "ok"
    assert clean.status == "ok" and clean.reasons == ()
    assert quiet.auc is not None and abs(quiet.auc - 0.5) < 0.05
    assert quiet.auc_lower is not None and quiet.auc_upper is not None
    assert quiet.auc_lower <= 0.5 <= quiet.auc_upper

    # Too few rows for the check (120 < multivariate.min_rows 200) but enough for the run:
    # insufficient data, which neither errs the run nor counts as bad.
    assert isinstance(small.multivariate, MultivariateResult)
    assert small.multivariate.status == "insufficient_data"
    assert small.multivariate.reasons == ("window 120 rows < multivariate.min_rows 200",)
    assert small.status == "ok", small.reasons

    # Through the store and back, typed, with its figures.
    stored = {r.run.end: r for r in latest_runs(engine, MODEL, kind="check")}
    for run in (clean, flipped, small):
        assert stored[run.end].run == run
        assert CheckRun.from_dict(run.as_dict()) == run
    figures = {(m.metric, m.feature): m.value
               for m in run_metrics_of(engine, stored[flipped.end].id)
               if m.check == "multivariate"}
    assert figures[("auc", "")] == section.auc
    assert figures[("auc_threshold", "")] == 0.6
    assert figures[("importance", section.top_features[0].feature)] == \
        section.top_features[0].importance
    assert not [m for m in run_metrics_of(engine, stored[small.end].id)
                if m.check == "multivariate"]

    # The HTML report's table of sections has its line.
    from monitor.run.report import _sections_table, _Verdict

    rows = _sections_table(_Verdict(record=stored[flipped.end], run=flipped, schema=None,
                                    reasons=()))
    (line,) = [r for r in rows if r[0] == "multivariate"]
    assert line[1] == "warn" and line[2].startswith(f"domain classifier AUC {section.auc:.4g}")
    assert "top features: " in line[2] and "x1" in line[2] and "x2" in line[2]

    # One warning does not trip the flag (trip_after 2); the small window kept it off.
    assert not flag_document(engine, config, MODEL, T0 + 4 * DAY)["active"]


def test_the_run_samples_both_sides_to_sample_rows(engine: sa.Engine, tmp_path: Path
                                                   ) -> None:
    """``multivariate.sample_rows`` bounds the reference's sample (kept in its profile) and
    the window's (seeded by the window: a rerun agrees)."""
    config = load_config(load_days(engine, tmp_path, [(300, 0.8)]))
    model = config.model(MODEL)
    small = model.model_copy(update={"multivariate": model.multivariate.model_copy(
        update={"sample_rows": 100, "min_rows": 20})})
    config = config.model_copy(update={"models": {MODEL: small}})
    (run,) = backfill(engine, config, MODEL, T0, T0 + DAY, now=T0 + 2 * DAY)
    assert isinstance(run.multivariate, MultivariateResult)
    assert (run.multivariate.rows_reference, run.multivariate.rows_current) == (100, 100)
    (again,) = backfill(engine, config, MODEL, T0, T0 + DAY, now=T0 + 2 * DAY)
    assert again.multivariate == run.multivariate
