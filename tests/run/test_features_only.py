"""A features-only model (contract ``task: features``) end to end, on both backends: logs
without a prediction are loaded, schema, drift and service run, performance does not
apply, and the fallback flag moves on drift alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.config import load_config
from monitor.errors import IngestError
from monitor.fallback.flag import flag_document
from monitor.ingest import ingest_labels
from monitor.results import DriftResult, NotApplicable, SchemaResult, ServiceResult
from monitor.run.check import backfill, recompute_immature, run_check
from monitor.run.evaluate import FEATURES_ONLY
from monitor.schema import load_schema
from monitor.store.runs import latest_runs, recheck_candidates, run_metrics_of
from monitor.store.tables import inference_logs
from tests.conftest import FEATURES_MODEL, load_features_only

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = T0 + 5 * DAY  # every window young: no label delay could make them mature


def test_features_only_model_end_to_end(engine: sa.Engine, tmp_path: Path) -> None:
    config_path, added = load_features_only(engine, tmp_path, [False, False, True, True])
    assert added == 1600
    with engine.connect() as conn:  # stored without a prediction: null
        predictions = conn.execute(sa.select(inference_logs.c.prediction).where(
            inference_logs.c.model == FEATURES_MODEL)).scalars().all()
    assert len(predictions) == 1600 and set(predictions) == {None}
    config = load_config(config_path)

    runs = backfill(engine, config, FEATURES_MODEL, T0, T0 + 4 * DAY, now=NOW)
    assert [r.status for r in runs] == ["ok", "ok", "critical", "critical"], \
        [r.reasons for r in runs]
    for run in runs:
        assert isinstance(run.schema, SchemaResult) and run.schema.status == "ok"
        assert [c.role for c in run.schema.columns] == ["feature"] * 11
        assert isinstance(run.service, ServiceResult) and run.service.status == "ok"
        assert run.performance == NotApplicable(FEATURES_ONLY)
        assert run.versions == NotApplicable(FEATURES_ONLY)
        assert run.as_dict()["checks"]["performance"] == {
            "status": "not_applicable", "reason": FEATURES_ONLY}
        drift = run.drift
        assert isinstance(drift, DriftResult)
        # The features alone are tested: no prediction column to count in the share.
        assert {f.feature for f in drift.features} == set(
            load_schema(config.model(FEATURES_MODEL).schema_path).feature_names)
    clean, drifted = runs[1].drift, runs[3].drift
    assert isinstance(clean, DriftResult) and isinstance(drifted, DriftResult)
    assert clean.status == "ok" and not clean.dataset_drift
    assert drifted.status == "critical" and drifted.dataset_drift
    assert {f.feature for f in drifted.features if f.drifted} >= {
        "annual_income", "credit_score", "loan_amount"}
    # The verdict is drift's alone: every reason of the critical run is a drift reason.
    assert runs[3].reasons and all(r.startswith("drift: ") for r in runs[3].reasons)

    # The flag tripped on the two drifted windows (trip_after 2), for drift.
    doc = flag_document(engine, config, FEATURES_MODEL, NOW)
    assert doc["active"] and doc["source"] == "auto"
    assert "2 consecutive bad runs" in doc["reason"] and "drift: " in doc["reason"]

    # Stored and read back as the same typed run, without performance figures.
    stored = latest_runs(engine, FEATURES_MODEL, kind="check")[0]
    assert stored.run == runs[3]
    figures = run_metrics_of(engine, stored.id)
    assert not [m for m in figures if m.check == "performance"]
    assert {m.check for m in figures} == {"run", "schema", "drift", "service"}
    # No labels to wait for: nothing to recheck.
    assert recheck_candidates(engine, FEATURES_MODEL, T0) == []
    assert recompute_immature(engine, config, FEATURES_MODEL, now=NOW) == []


def test_labels_of_a_features_only_model_are_refused(engine: sa.Engine, tmp_path: Path
                                                     ) -> None:
    config_path, _ = load_features_only(engine, tmp_path, [False], rows=120)
    schema = load_schema(load_config(config_path).model(FEATURES_MODEL).schema_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n1001-0,1\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"model 'loan_inputs' is monitored on its features "
                       r"alone .*task: features.*nothing was written"):
        ingest_labels(engine, FEATURES_MODEL, schema, labels)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM ground_truth").scalar() == 0


def test_a_single_run_of_a_features_only_model_is_never_an_error(engine: sa.Engine,
                                                                  tmp_path: Path) -> None:
    config_path, _ = load_features_only(engine, tmp_path, [False])
    run = run_check(engine, load_config(config_path), FEATURES_MODEL, at=T0 + DAY, now=NOW)
    assert run is not None and run.status == "ok", run.reasons
    assert run.reasons == ()
    assert isinstance(run.performance, NotApplicable)
