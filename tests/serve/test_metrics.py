"""Prometheus metrics read from the store at scrape time: values, absence, bounds, the flag,
the scrape's failure mode and cost, the exposition format (promtool) and the README table.

A fresh registry in every test, asserted with ``registry.get_sample_value``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import REGISTRY, generate_latest

from monitor.config import Config, load_config
from monitor.fallback.flag import apply_run, flag_document, set_override
from monitor.policy import RunOutcome
from monitor.results import DriftResult, SchemaResult
from monitor.run.check import run_check
from monitor.serve.metrics import (
    CHECK_STATUSES,
    METRICS,
    PERFORMANCE_METRICS,
    RUN_STATUSES,
    StoreCollector,
    build_registry,
    metric_reference,
)
from monitor.store.logs import insert_logs, make_record
from monitor.store.runs import latest_runs, run_metrics_of, save_run
from tests.conftest import ROOT, good_row
from tests.serve.conftest import (
    check_run,
    drift_result,
    feature_drift,
    save_check_run,
    save_schema_run,
    schema_result,
)

M = "loan_default"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
STABLE = datetime(2026, 10, 5, tzinfo=UTC)      # end of the sample's window of 10-04
DRIFTED = datetime(2026, 10, 13, tzinfo=UTC)    # end of the window of 10-12
LATER = datetime(2026, 11, 27, tzinfo=UTC)      # every label has long arrived
FEATURES = ["age", "annual_income", "loan_amount", "credit_score", "debt_to_income",
            "employment_years", "open_accounts", "home_ownership", "loan_purpose",
            "has_cosigner", "application_channel"]


def write_config(tmp_path: Path, url: str, models: dict[str, dict[str, Any]],
                 **top: Any) -> Config:
    """A monitor.yaml with the given models (sample contract and reference by default)."""
    base = {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
            "reference": str(ROOT / "sample_data" / "reference.parquet"),
            "window": "1d", "min_rows": 10}
    data = {"database_url": url, **top,
            "models": {name: {**base, **over} for name, over in models.items()}}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


def url_of(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def value(registry: Any, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def label_values(registry: Any, name: str, label: str) -> set[str]:
    return {s.labels[label] for fam in registry.collect() for s in fam.samples
            if s.name == name}


def log_day(engine: sa.Engine, model: str, day: int, n: int = 20, **fields: Any) -> None:
    """``n`` valid log rows of the sample model on day ``day`` after T0."""
    records = []
    for i in range(n):
        row = good_row(i)
        ts = T0 + day * DAY + timedelta(minutes=i)
        records.append(make_record({
            "request_id": f"d{day}-{i}", "timestamp": ts.isoformat(),
            "features": {k: row[k] for k in FEATURES},
            "prediction": row["prediction"],
            "probabilities": {"0": row["proba_0"], "1": row["proba_1"]},
            "latency_ms": 10.0 + i, **fields,
        }))
    with engine.begin() as conn:
        insert_logs(conn, model, records)


def store_run(engine: sa.Engine, model: str, status: str, *, end: datetime = T0 + DAY,
              schema: SchemaResult | None = None, drift: DriftResult | None = None,
              kind: str = "check") -> int:
    """A run stored directly, built from typed sections (a complete document)."""
    if kind == "schema":
        return save_schema_run(engine, model, schema or schema_result(status=status),
                               end=end, metrics=[])
    return save_check_run(engine, check_run(model, end=end, status=status, schema=schema,
                                            drift=drift), metrics=[])


@pytest.fixture
def sample(sample_store: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private copy of the sample store (SQLite) and a config for it."""
    from monitor.store.db import create_engine

    path = tmp_path / "store.db"
    shutil.copyfile(sample_store, path)
    eng = create_engine(f"sqlite:///{path}")
    yield eng, write_config(tmp_path, f"sqlite:///{path}", {M: {"min_rows": 500}})
    eng.dispose()


# --- values -----------------------------------------------------------------------------


def test_values_equal_the_stored_run(sample) -> None:
    engine, cfg = sample
    run = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
    assert run is not None and run.run_id is not None and run.status == "critical"
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    stored = {(m.check, m.metric, m.feature): m.value for m in run_metrics_of(engine, run.run_id)}
    # The sample's logs carry their version; the run's figures are labelled with it.
    run_labels = {"model": M, "version": "1.4.0"}

    def get(name: str, **extra: str) -> float | None:
        return value(registry, name, **run_labels, **extra)

    for status in RUN_STATUSES:
        assert get("mqm_run_status", status=status) == float(status == "critical")
    for check in ("schema", "drift", "performance", "service", "versions"):
        section = run.as_dict()["checks"][check]["status"]
        for status in CHECK_STATUSES:
            assert get("mqm_check_status", check=check, status=status) == float(
                status == section)
    assert get("mqm_rows_checked") == run.rows == stored[("run", "rows", "")]
    assert get("mqm_run_window_end_timestamp_seconds") == DRIFTED.timestamp()
    assert get("mqm_schema_violation_ratio") == stored[("schema", "violation_rate", "")]
    assert get("mqm_schema_missing_columns") == stored[("schema", "missing_columns", "")]
    assert get("mqm_drifted_features_ratio") == stored[("drift", "share_drifted", "")]
    assert get("mqm_dataset_drift") == stored[("drift", "dataset_drift", "")]
    features = run.as_dict()["checks"]["drift"]["features"]
    assert len(features) == len(FEATURES) + 1  # and the prediction
    for feat in features:
        name = feat["feature"]
        assert get("mqm_drift_score", feature=name) == stored[("drift", "score", name)]
        assert get("mqm_drift_detected", feature=name) == stored[("drift", "drifted", name)]
        assert get("mqm_drift_threshold", feature=name) == feat["threshold"]
        assert get("mqm_null_rate_change_ratio", feature=name) == stored[
            ("drift", "null_rate_change", name)]
        assert get("mqm_unseen_category_ratio", feature=name) == stored.get(
            ("drift", "unseen_share", name))
        assert get("mqm_schema_feature_violation_ratio", feature=name) == stored[
            ("schema", "violation_rate", name)]
    assert get("mqm_drift_detected", feature="credit_score") == 1.0
    assert get("mqm_unseen_category_ratio", feature="age") is None  # numerical: none stored
    perf = run.as_dict()["checks"]["performance"]
    assert get("mqm_accuracy_ratio") == stored[("performance", "accuracy", "")]
    assert get("mqm_accuracy_drop_ratio") == stored[("performance", "accuracy_drop", "")] > 0.1
    assert get("mqm_estimated_accuracy_ratio") == stored[
        ("performance", "estimated_accuracy", "")]
    assert get("mqm_estimated_accuracy_drop_ratio") == perf["estimated"]["drop"]
    assert get("mqm_label_coverage_ratio") == stored[("performance", "label_coverage", "")]
    est = perf["estimated"]
    assert get("mqm_estimated_accuracy_lower_ratio") == est["lower_bound"] is not None
    assert get("mqm_estimated_accuracy_upper_ratio") == est["upper_bound"]
    assert get("mqm_estimated_accuracy_sampling_error_ratio") == est["sampling_error"] > 0
    for name, estimate in est["metrics"].items():
        assert get("mqm_estimated_performance_metric", metric=name) == estimate, name
        # Every estimate with its band: f1, precision, recall and roc_auc too, not only
        # accuracy.
        lower, upper = est["lower_bounds"][name], est["upper_bounds"][name]
        assert get("mqm_estimated_performance_metric_lower", metric=name) == lower, name
        assert get("mqm_estimated_performance_metric_upper", metric=name) == upper, name
        assert lower is not None and lower < estimate < upper, name
    assert get("mqm_estimated_performance_metric_drop", metric="accuracy") == est["drop"]
    assert get("mqm_estimated_performance_metric", metric="mae") is None  # a classifier
    assert get("mqm_estimated_calibrated_classes") == len(est["calibrated"])
    assert get("mqm_labels_mature") == 1.0
    for name in ("accuracy", "f1", "roc_auc"):
        assert get("mqm_performance_metric", metric=name) == perf["metrics"][name]
        assert get("mqm_performance_metric_drop", metric=name) == perf["drops"][name]
    assert get("mqm_performance_metric", metric="mae") is None  # a classifier
    for pct in ("50", "95", "99"):  # stored in ms, exported in seconds
        assert get("mqm_latency_seconds", percentile=pct) == pytest.approx(
            stored[("service", f"latency_p{pct}_ms", "")] / 1000)
    assert get("mqm_error_ratio") == stored[("service", "error_rate", "")]
    assert get("mqm_throughput_requests_per_second") == stored[
        ("service", "throughput_per_s", "")]
    assert get("mqm_fallback_answer_ratio") == stored[("service", "fallback_rate", "")]
    assert value(registry, "mqm_runs_total", model=M, status="critical") == 1.0
    assert value(registry, "mqm_feature_labels_dropped", model=M) == 0.0
    assert value(registry, "mqm_scrape_error") == 0.0
    assert label_values(registry, "mqm_drift_score", "feature") == {*FEATURES, "prediction"}


def test_each_model_version_of_the_latest_run_is_exported(sample) -> None:
    engine, cfg = sample
    run = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
    assert run is not None and run.run_id is not None
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    stored = {(m.check, m.metric, m.feature): m.value for m in run_metrics_of(engine, run.run_id)}
    base = {"model": M, "version": value_label(registry)}
    assert label_values(registry, "mqm_model_version_rows", "model_version") == {
        "1.4.0", "1.5.0"}
    for ver in ("1.4.0", "1.5.0"):
        def get(name: str) -> float | None:
            return value(registry, name, **base, model_version=ver)  # noqa: B023

        assert get("mqm_model_version_rows") == stored[("versions", "rows", ver)]
        assert get("mqm_model_version_accuracy_ratio") == stored[("versions", "accuracy", ver)]
        assert get("mqm_model_version_estimated_accuracy_ratio") == stored[
            ("versions", "estimated_accuracy", ver)]
        assert get("mqm_model_version_error_ratio") == stored[("versions", "error_rate", ver)]
        assert get("mqm_model_version_latency_p95_seconds") == pytest.approx(
            stored[("versions", "latency_p95_ms", ver)] / 1000)
        assert get("mqm_model_version_prediction_drift_detected") == stored[
            ("versions", "prediction_drifted", ver)]
    assert (value(registry, "mqm_model_version_accuracy_ratio", **base, model_version="1.4.0")
            > value(registry, "mqm_model_version_accuracy_ratio", **base,
                    model_version="1.5.0"))


def value_label(registry: Any) -> str:
    """The ``version`` label of the latest run's series (the newest log's version)."""
    [version] = label_values(registry, "mqm_rows_checked", "version")
    return version


def test_model_version_series_are_bounded(engine: sa.Engine, tmp_path: Path) -> None:
    from monitor.serve.metric_specs import MAX_VERSION_LABELS

    cfg = write_config(tmp_path, url_of(engine), {M: {}})
    records = []
    for v in range(MAX_VERSION_LABELS + 3):  # version v0 has the most rows, v12 the fewest
        for i in range(30 - v):
            row = good_row(i)
            records.append(make_record({
                "request_id": f"v{v}-{i}", "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
                "features": {k: row[k] for k in FEATURES}, "prediction": row["prediction"],
                "latency_ms": 10.0, "model_version": f"v{v}"}))
    with engine.begin() as conn:
        insert_logs(conn, M, records)
    run_check(engine, cfg, M, at=T0 + DAY, now=LATER)
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    assert label_values(registry, "mqm_model_version_rows", "model_version") == {
        f"v{i}" for i in range(MAX_VERSION_LABELS)}


def test_the_newest_window_is_exported_and_a_recheck_of_it_wins(sample) -> None:
    engine, cfg = sample
    newest = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
    older = run_check(engine, cfg, M, at=STABLE, now=LATER)  # checked after the newer one
    assert newest is not None and older is not None and older.status == "ok"
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    assert value(registry, "mqm_run_window_end_timestamp_seconds", model=M,
                 version="1.4.0") == DRIFTED.timestamp()
    assert value(registry, "mqm_run_status", model=M, version="1.4.0",
                 status="critical") == 1.0
    # A recheck of the newest window replaces its figures.
    again = run_check(engine, cfg, M, at=DRIFTED, now=LATER + DAY, recomputes=newest.run_id)
    assert again is not None
    [recheck] = latest_runs(engine, M, kind="check", limit=1)
    assert recheck.id == again.run_id
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    assert value(registry, "mqm_run_timestamp_seconds", model=M, version="1.4.0") == (
        recheck.finished_at.timestamp())
    assert value(registry, "mqm_runs_total", model=M, status="critical") == 2.0
    assert value(registry, "mqm_runs_total", model=M, status="ok") == 1.0


def test_metrics_of_a_check_that_could_not_run_are_absent(sample, tmp_path: Path) -> None:
    engine, _ = sample
    cfg = write_config(tmp_path, url_of(engine),
                       {M: {"min_rows": 500, "reference": str(tmp_path / "gone.parquet")}})
    run = run_check(engine, cfg, M, at=STABLE, now=LATER)
    assert run is not None and run.status == "error"
    assert run.drift is not None and run.performance is not None
    assert run.drift.status == run.performance.status == "error"
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    labels = {"model": M, "version": "1.4.0"}
    assert value(registry, "mqm_run_status", **labels, status="error") == 1.0
    assert value(registry, "mqm_check_status", **labels, check="drift", status="error") == 1.0
    for name in ("mqm_drifted_features_ratio", "mqm_dataset_drift", "mqm_accuracy_ratio",
                 "mqm_label_coverage_ratio", "mqm_estimated_accuracy_ratio"):
        assert value(registry, name, **labels) is None, name
    for name in ("mqm_drift_score", "mqm_drift_detected", "mqm_null_rate_change_ratio"):
        assert label_values(registry, name, "feature") == set(), name
    assert label_values(registry, "mqm_performance_metric", "metric") == set()
    # The checks that ran are there.
    checks = run.as_dict()["checks"]
    assert value(registry, "mqm_schema_violation_ratio", **labels) == (
        checks["schema"]["violation_rate"])
    assert value(registry, "mqm_error_ratio", **labels) == checks["service"]["error_rate"]
    assert value(registry, "mqm_scrape_error") == 0.0


def test_an_untested_drift_column_has_no_score(engine: sa.Engine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}})
    store_run(engine, M, "ok", drift=drift_result([
        feature_drift("age", score=None, threshold=None, null_rate_change=1.0,
                      error="no values in the window"),
        feature_drift("credit_score", score=0.02, threshold=0.1)]))
    registry = build_registry(engine, cfg)
    labels = {"model": M, "version": ""}  # no version anywhere
    assert value(registry, "mqm_drift_score", **labels, feature="age") is None
    assert value(registry, "mqm_drift_detected", **labels, feature="age") is None
    assert value(registry, "mqm_null_rate_change_ratio", **labels, feature="age") == 1.0
    assert value(registry, "mqm_drift_score", **labels, feature="credit_score") == 0.02
    assert value(registry, "mqm_drift_detected", **labels, feature="credit_score") == 0.0


def test_an_unreadable_document_keeps_the_row_series_and_flags_the_scrape(
        engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}})
    end = T0 + DAY
    # A hand-made document that is no check run (no window, a drift section cut short).
    run_id = save_run(engine, model=M, kind="check", window_start=end - DAY, window_end=end,
                      rows=20, status="warn", summary={
                          "model": M, "status": "warn", "rows": 20, "checks": {
                              "drift": {"status": "warn", "share_drifted": 0.5}}},
                      metrics=[], config_hash="x", reference_version=None,
                      started_at=end, finished_at=end + timedelta(minutes=1))
    registry = build_registry(engine, cfg)
    labels = {"model": M, "version": ""}
    with caplog.at_level(logging.WARNING, logger="mqm.metrics"):
        assert value(registry, "mqm_scrape_error") == 1.0
    assert f"run {run_id}: its document cannot be read back" in caplog.text
    # What the row's columns say is there...
    for status in RUN_STATUSES:
        assert value(registry, "mqm_run_status", **labels, status=status) == float(
            status == "warn")
    assert value(registry, "mqm_rows_checked", **labels) == 20.0
    assert value(registry, "mqm_run_window_end_timestamp_seconds", **labels) == end.timestamp()
    assert value(registry, "mqm_run_timestamp_seconds", **labels) == (
        end + timedelta(minutes=1)).timestamp()
    assert value(registry, "mqm_runs_total", model=M, status="warn") == 1.0
    assert value(registry, "mqm_fallback_active", model=M) == 0.0
    # ... what only the document says is not.
    assert value(registry, "mqm_drifted_features_ratio", **labels) is None
    assert value(registry, "mqm_check_status", **labels, check="drift", status="warn") is None


# --- both backends ------------------------------------------------------------------------


def test_synthetic_runs_on_every_backend(engine: sa.Engine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {"version": "2.0"}, "other": {}})
    log_day(engine, M, 0)
    log_day(engine, "other", 0, model_version="7.1")
    first = run_check(engine, cfg, M, at=T0 + DAY, now=T0 + DAY)
    other = run_check(engine, cfg, "other", at=T0 + DAY, now=T0 + DAY)
    assert first is not None and other is not None
    registry = build_registry(engine, cfg, clock=lambda: T0 + DAY)
    # No version in the logs: the configured one; the logs' version when they carry one.
    labels = {"model": M, "version": "2.0"}
    assert value(registry, "mqm_rows_checked", **labels) == 20.0
    assert value(registry, "mqm_run_status", **labels, status=first.status) == 1.0
    assert value(registry, "mqm_latency_seconds", **labels, percentile="50") == pytest.approx(
        first.as_dict()["checks"]["service"]["latency_p50_ms"] / 1000)
    assert value(registry, "mqm_schema_violation_ratio", **labels) == (
        first.as_dict()["checks"]["schema"]["violation_rate"])
    assert value(registry, "mqm_rows_checked", model="other", version="7.1") == 20.0
    assert value(registry, "mqm_error_ratio", model="other", version="7.1") == 0.0
    assert value(registry, "mqm_runs_total", model="other", status=other.status) == 1.0
    assert value(registry, "mqm_scrape_error") == 0.0


def test_runs_total_counts_check_runs_by_status(engine: sa.Engine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}, "quiet": {}})
    for status in ("ok", "ok", "critical", "error", "insufficient_data", "warn", "ok"):
        store_run(engine, M, status)
    store_run(engine, M, "critical", kind="schema")  # a schema-only run: not a check run
    store_run(engine, "unmonitored", "critical")     # not in the config
    registry = build_registry(engine, cfg)
    expected = {"ok": 3, "warn": 1, "critical": 1, "insufficient_data": 1, "error": 1}
    for status, count in expected.items():
        assert value(registry, "mqm_runs_total", model=M, status=status) == count
    # A model without runs has every status at 0, so rate() sees the first one.
    for status in RUN_STATUSES:
        assert value(registry, "mqm_runs_total", model="quiet", status=status) == 0.0
    assert label_values(registry, "mqm_runs_total", "model") == {M, "quiet"}
    assert label_values(registry, "mqm_run_status", "model") == {M}  # quiet has no run


def test_feature_labels_are_bounded_and_the_rest_counted(engine: sa.Engine,
                                                         tmp_path: Path) -> None:
    names = [f"f{i:02d}" for i in range(30)]
    contract = {"model": "wide", "task": "classification",
                "features": [{"name": n, "type": "float"} for n in names],
                "prediction": {"column": "score", "type": "int", "classes": [0, 1]}}
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    cfg = write_config(tmp_path, url_of(engine), {"wide": {"schema": str(tmp_path / "wide.yaml")}},
                       serve={"max_feature_labels": 10})
    columns = [*names, "score", "stray"]  # "stray": a name the contract does not know
    store_run(engine, "wide", "ok", schema=schema_result(columns),
              drift=drift_result([feature_drift(c, score=0.5, threshold=0.1)
                                  for c in columns]))
    registry = build_registry(engine, cfg)
    kept = {"score", *names[:9]}  # the prediction first, then the contract's order
    for name in ("mqm_drift_score", "mqm_drift_threshold", "mqm_drift_detected",
                 "mqm_null_rate_change_ratio", "mqm_schema_feature_violation_ratio"):
        assert label_values(registry, name, "feature") == kept, name
    assert value(registry, "mqm_feature_labels_dropped", model="wide") == 31 - 10 + 1
    assert value(registry, "mqm_schema_violation_ratio", model="wide", version="") == 0.0


def test_an_unreadable_contract_drops_feature_series_and_flags_the_scrape(
        engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {"schema": str(tmp_path / "gone.yaml")}})
    store_run(engine, M, "ok", drift=drift_result([feature_drift("age", score=0.5,
                                                                 threshold=0.1)]))
    registry = build_registry(engine, cfg)
    with caplog.at_level(logging.WARNING, logger="mqm.metrics"):
        assert label_values(registry, "mqm_drift_score", "feature") == set()
    assert "gone.yaml" in caplog.text
    assert value(registry, "mqm_feature_labels_dropped", model=M) == 1.0
    assert value(registry, "mqm_drifted_features_ratio", model=M, version="") == 0.0
    assert value(registry, "mqm_scrape_error") == 1.0


# --- the fallback flag ------------------------------------------------------------------


def test_fallback_gauges_agree_with_the_flag_document(engine: sa.Engine,
                                                      tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}})
    clock = {"now": T0}
    registry = build_registry(engine, cfg, clock=lambda: clock["now"])

    def agree(now: datetime) -> dict[str, Any]:
        clock["now"] = now
        got = {k: value(registry, f"mqm_fallback_{k}", model=M)
               for k in ("active", "stale", "manual")}
        doc = flag_document(engine, cfg, M, now)  # after: it creates a missing row
        assert got == {"active": float(doc["active"]), "stale": float(doc["stale"]),
                       "manual": float(doc["source"] == "manual")}, (now, doc)
        return doc

    assert agree(T0)["active"] is False  # no row yet
    for i, status in enumerate(("critical", "critical"), start=1):
        apply_run(engine, cfg, M, RunOutcome(i, T0 + i * DAY, status), now=T0 + i * DAY)
    assert agree(T0 + 2 * DAY)["active"] is True
    set_override(engine, cfg, M, active=False, by="ops", until=T0 + 3 * DAY, now=T0 + 2 * DAY)
    assert agree(T0 + 2 * DAY + timedelta(hours=1))["source"] == "manual"
    expiry = value(registry, "mqm_fallback_override_expiry_timestamp_seconds", model=M)
    assert expiry == (T0 + 3 * DAY).timestamp()
    # The override has expired by now; the scrape sees that without writing it.
    assert agree(T0 + 3 * DAY)["active"] is True
    assert value(registry, "mqm_fallback_override_expiry_timestamp_seconds", model=M) is None
    assert agree(T0 + 6 * DAY)["stale"] is True  # 4 days since the last success > 3 windows


def test_staleness_and_time_since_the_last_success(engine: sa.Engine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {"fallback": {"stale_after": "6h"}}})
    clock = {"now": T0}
    registry = build_registry(engine, cfg, clock=lambda: clock["now"])
    assert value(registry, "mqm_last_success_timestamp_seconds", model=M) is None
    assert value(registry, "mqm_seconds_since_last_success", model=M) is None
    success = T0 + DAY + timedelta(minutes=5)
    apply_run(engine, cfg, M, RunOutcome(1, T0 + DAY, "ok"), now=success)
    apply_run(engine, cfg, M, RunOutcome(2, T0 + 2 * DAY, "error"),  # no success
              now=success + timedelta(hours=3))
    clock["now"] = success + timedelta(hours=1)
    assert value(registry, "mqm_last_success_timestamp_seconds", model=M) == success.timestamp()
    assert value(registry, "mqm_seconds_since_last_success", model=M) == 3600.0
    assert value(registry, "mqm_fallback_stale", model=M) == 0.0
    clock["now"] = success + timedelta(hours=7)
    assert value(registry, "mqm_seconds_since_last_success", model=M) == 7 * 3600.0
    assert value(registry, "mqm_fallback_stale", model=M) == 1.0


# --- failure, cost, registry ------------------------------------------------------------


def test_a_failing_query_answers_scrape_error_and_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from monitor.store.db import create_engine

    empty = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables at all
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}", {M: {}})
    registry = build_registry(empty, cfg)
    with caplog.at_level(logging.ERROR, logger="mqm.metrics"):
        families = list(registry.collect())
    samples = {s.name: s.value for fam in families for s in fam.samples}
    # The store's series are absent; the scrape's own, and this process's counter, are not.
    assert set(samples) == {"mqm_scrape_error", "mqm_scrape_duration_seconds",
                            "mqm_alert_post_failures_total"}
    assert samples["mqm_scrape_error"] == 1.0
    assert "reading the store failed" in caplog.text and "no such table" in caplog.text
    assert generate_latest(registry)  # still a valid answer for Prometheus
    empty.dispose()


def test_a_scrape_is_five_queries_whatever_the_models_and_features(
        engine: sa.Engine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}, "second": {}, "third": {}})
    for model in ("loan_default", "second", "third"):
        log_day(engine, model, 0)
        assert run_check(engine, cfg, model, at=T0 + DAY, now=T0 + DAY) is not None
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    registry = build_registry(engine, cfg)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        generate_latest(registry)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 5, statements
    assert label_values(registry, "mqm_rows_checked", "model") == {M, "second", "third"}


def test_scrapes_of_two_weeks_of_runs_agree(sample) -> None:
    # How long a scrape takes is measured in bench/scrape.py, not asserted here.
    engine, cfg = sample
    for day in range(3, 16):  # two weeks of daily runs
        run_check(engine, cfg, M, at=datetime(2026, 10, day, tzinfo=UTC), now=LATER)
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    first = generate_latest(registry)  # the first scrape parses the contract
    assert generate_latest(registry).split(b"mqm_scrape_duration")[0] == first.split(
        b"mqm_scrape_duration")[0]
    assert value(registry, "mqm_runs_total", model=M, status="critical") >= 1


def test_build_registry_is_fresh_and_registering_reads_nothing(engine: sa.Engine,
                                                               tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}})
    connects: list[Any] = []

    def connected(conn: Any) -> None:
        connects.append(conn)

    sa.event.listen(engine, "engine_connect", connected)
    try:
        first, second = build_registry(engine, cfg), build_registry(engine, cfg)
        assert connects == []  # describe() names the families without a query
    finally:
        sa.event.remove(engine, "engine_connect", connected)
    assert first is not second and first is not REGISTRY
    assert REGISTRY.get_sample_value("mqm_scrape_error") is None
    assert first.get_sample_value("mqm_scrape_error") == 0.0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        first.register(StoreCollector(engine, cfg))


# --- exposition and docs ------------------------------------------------------------------


def test_promtool_accepts_a_real_scrape(sample) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = ("promtool is not installed (apt-get install prometheus); "
                   "the exposition lint is skipped")
        if os.environ.get("MQM_REQUIRE_PROMTOOL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    engine, cfg = sample
    for day in (5, 12, 13):
        run_check(engine, cfg, M, at=datetime(2026, 10, day, tzinfo=UTC), now=LATER)
    set_override(engine, cfg, M, active=True, by="ops", now=LATER)
    text = generate_latest(build_registry(engine, cfg, clock=lambda: LATER))
    names = {line.split()[2] for line in text.decode().splitlines()
             if line.startswith("# TYPE")}
    assert names == {s.name for s in METRICS}
    assert b"mqm_drift_score{" in text and b"mqm_latency_seconds{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_readme_metric_reference_matches_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert metric_reference() in readme, "README metric reference is stale: paste the " \
        "output of `mqm metrics reference`"


def test_declarations_follow_the_naming_rules() -> None:
    from monitor.checks import estimated_metrics
    from monitor.checks.estimated_loss import ESTIMATED_LOSSES
    from monitor.checks.performance import CLASSIFICATION_METRICS, REGRESSION_METRICS
    from monitor.serve.metric_specs import ESTIMATED_METRICS

    assert PERFORMANCE_METRICS == CLASSIFICATION_METRICS + REGRESSION_METRICS
    assert ESTIMATED_METRICS == estimated_metrics.ESTIMATED_METRICS + ESTIMATED_LOSSES
    names = [s.name for s in METRICS]
    assert len(names) == len(set(names))
    for spec in METRICS:
        assert spec.name.startswith("mqm_")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert "quantile" not in spec.labels and "le" not in spec.labels
        assert not spec.name.endswith(("_ms", "_milliseconds")), spec.name
        assert set(spec.labels) <= {"model", "version", "feature", "status", "check",
                                    "percentile", "metric", "table", "segment",
                                    "model_version"}


def test_a_window_too_small_to_judge_exports_its_status_and_no_figures(
        engine: sa.Engine, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url_of(engine), {M: {}})
    empty = check_run(M, end=T0 + DAY, status="insufficient_data", rows=0,
                      schema=schema_result(rows=0, status="insufficient_data"),
                      drift=drift_result([feature_drift("age", score=None, threshold=None,
                                                        null_rate_change=-0.1,
                                                        error="no values")]))
    save_check_run(engine, empty)
    registry = build_registry(engine, cfg)
    labels = {"model": M, "version": ""}
    assert value(registry, "mqm_run_status", **labels, status="insufficient_data") == 1.0
    assert value(registry, "mqm_rows_checked", **labels) == 0.0
    assert value(registry, "mqm_check_status", **labels, check="schema",
                 status="insufficient_data") == 1.0
    for name in ("mqm_schema_missing_columns", "mqm_schema_violation_ratio",
                 "mqm_dataset_drift", "mqm_drifted_features_ratio"):
        assert value(registry, name, **labels) is None, name
    assert label_values(registry, "mqm_null_rate_change_ratio", "feature") == set()


def test_schema_figures_per_kind_equal_the_stored_columns(sample) -> None:
    engine, cfg = sample
    run = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
    assert run is not None and isinstance(run.schema, SchemaResult)
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    labels = {"model": M, "version": "1.4.0"}
    for col in run.schema.columns:
        if col.state != "present":
            continue
        for name, want in (("mqm_schema_type_mismatch_ratio", col.type_mismatch_rate),
                           ("mqm_schema_null_ratio", col.null_rate),
                           ("mqm_schema_out_of_range_ratio", col.out_of_range_rate)):
            assert value(registry, name, **labels, feature=col.column) == want, (name, col)
    # The drifted sample has wrongly typed values in some column.
    assert any(value(registry, "mqm_schema_type_mismatch_ratio", **labels,
                     feature=col.column) for col in run.schema.columns)


def test_retention_is_exported_from_the_store(engine: sa.Engine, tmp_path: Path) -> None:
    """Rows deleted per table and model (0 before the first pass), when retention last
    ran and its horizon: what the store recorded, on every replica alike."""
    from monitor.run.retention import apply_retention

    cfg = write_config(tmp_path, url_of(engine), {M: {"retention": "9d"}, "quiet": {}})
    for day in range(4):
        log_day(engine, M, day)
    with engine.connect() as conn:
        first_day = conn.execute(sa.text(
            "SELECT count(*) FROM inference_logs WHERE ts < :t"), {"t": T0 + DAY}).scalar_one()
    before = build_registry(engine, cfg)
    for table in ("inference_logs", "ground_truth", "log_blocks"):
        assert value(before, "mqm_retention_deleted_rows_total", model=M, table=table) == 0
    assert value(before, "mqm_retention_last_run_timestamp_seconds", model=M) is None

    now = T0 + 10 * DAY + timedelta(hours=1)  # horizon: the end of the first day
    result = apply_retention(engine, cfg, M, now=now)
    assert result is not None and result.logs == first_day > 0
    registry = build_registry(engine, cfg)
    assert value(registry, "mqm_retention_deleted_rows_total", model=M,
                 table="inference_logs") == first_day
    assert value(registry, "mqm_retention_last_run_timestamp_seconds", model=M) == \
        now.timestamp()
    assert value(registry, "mqm_retention_horizon_timestamp_seconds", model=M) == \
        (T0 + DAY).timestamp()
    assert value(registry, "mqm_retention_deleted_rows_total", model="quiet",
                 table="inference_logs") == 0
    assert value(registry, "mqm_retention_horizon_timestamp_seconds", model="quiet") is None


def test_multivariate_figures_equal_the_stored_section(sample, tmp_path: Path) -> None:
    from monitor.results import MultivariateResult

    engine, _ = sample
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}",
                       {M: {"min_rows": 500, "multivariate": {"enabled": True}}})
    run = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
    assert run is not None
    section = run.multivariate
    assert isinstance(section, MultivariateResult) and section.auc is not None
    registry = build_registry(engine, cfg, clock=lambda: LATER)
    labels = {"model": M, "version": "1.4.0"}
    assert value(registry, "mqm_check_status", **labels, check="multivariate",
                 status=section.status) == 1.0
    for name in ("auc", "auc_lower", "auc_upper", "auc_threshold", "reconstruction_error",
                 "reconstruction_lower", "reconstruction_upper"):
        assert value(registry, f"mqm_multivariate_{name}", **labels) == pytest.approx(
            getattr(section, name)), name
    assert value(registry, "mqm_multivariate_auc_threshold", **labels) == 0.6
    importances = {f.feature: f.importance for f in section.top_features}
    assert importances and label_values(
        registry, "mqm_multivariate_feature_importance", "feature") == set(importances)
    for feature, importance in importances.items():
        assert value(registry, "mqm_multivariate_feature_importance", **labels,
                     feature=feature) == pytest.approx(importance)

    # Without the section (multivariate off) no series at all.
    plain = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", {M: {"min_rows": 500}})
    run_check(engine, plain, M, at=DRIFTED, now=LATER)
    registry = build_registry(engine, plain, clock=lambda: LATER)
    assert value(registry, "mqm_multivariate_auc", **labels) is None
