"""What reads a features-only model's runs (contract ``task: features``), on both backends:
the Prometheus scrape (no accuracy series, performance ``not_applicable``) and the HTTP
API's run documents."""

from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from monitor.config import load_config
from monitor.results import CheckRun
from monitor.run.check import backfill
from monitor.run.evaluate import FEATURES_ONLY
from monitor.serve.api import ENV_TOKEN, create_app
from monitor.serve.metrics import CHECK_STATUSES, build_registry
from tests.conftest import FEATURES_MODEL, FEATURES_T0, load_features_only

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DAY = timedelta(days=1)
NOW = FEATURES_T0 + 5 * DAY
# Every series that needs a prediction: none may be exported for a features-only model.
PREDICTION_SERIES = (
    "mqm_accuracy_ratio", "mqm_accuracy_drop_ratio", "mqm_label_coverage_ratio",
    "mqm_labels_mature", "mqm_performance_metric", "mqm_performance_metric_drop",
    "mqm_estimated_accuracy_ratio", "mqm_estimated_accuracy_drop_ratio",
    "mqm_estimated_accuracy_sampling_error_ratio", "mqm_estimated_accuracy_lower_ratio",
    "mqm_estimated_accuracy_upper_ratio", "mqm_estimated_performance_metric",
    "mqm_estimated_performance_metric_sampling_error", "mqm_estimated_calibrated_classes",
    "mqm_estimated_performance_metric_lower", "mqm_estimated_performance_metric_upper",
    "mqm_estimated_performance_metric_drop",
)


@pytest.fixture
def checked(engine: sa.Engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The features-only model, two clean days then two drifted ones, checked."""
    config_path, _ = load_features_only(engine, tmp_path, [False, False, True, True])
    config = load_config(config_path)
    runs = backfill(engine, config, FEATURES_MODEL, FEATURES_T0, FEATURES_T0 + 4 * DAY,
                    now=NOW)
    assert [r.status for r in runs] == ["ok", "ok", "critical", "critical"]
    return config, runs


def test_scrape_of_a_features_only_model(engine: sa.Engine, checked) -> None:  # type: ignore[no-untyped-def]
    config, runs = checked
    registry = build_registry(engine, config, clock=lambda: NOW)
    run = {"model": FEATURES_MODEL, "version": ""}

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**run, **labels})

    assert registry.get_sample_value("mqm_scrape_error") == 0
    assert get("mqm_run_status", status="critical") == 1
    for status in CHECK_STATUSES:
        assert get("mqm_check_status", check="performance", status=status) == float(
            status == "not_applicable")
        assert get("mqm_check_status", check="drift", status=status) == float(
            status == "critical")
    samples = [s for fam in registry.collect() for s in fam.samples]
    names = {s.name for s in samples if s.labels.get("model") == FEATURES_MODEL}
    assert not names & set(PREDICTION_SERIES)
    # Per-feature series for the contract's features only: no prediction column.
    drifted = {s.labels["feature"]: s.value for s in samples
               if s.name == "mqm_drift_detected"}
    assert set(drifted) == {f.feature for f in runs[-1].drift.features}
    assert "prediction" not in drifted and drifted["annual_income"] == 1
    assert registry.get_sample_value("mqm_feature_labels_dropped",
                                     {"model": FEATURES_MODEL}) == 0
    assert registry.get_sample_value("mqm_fallback_active", {"model": FEATURES_MODEL}) == 1
    text = generate_latest(registry).decode()
    assert 'check="performance",model="loan_inputs",status="not_applicable"' in text


def test_api_serves_a_features_only_run(engine: sa.Engine, checked,  # type: ignore[no-untyped-def]
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config, runs = checked
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    with TestClient(create_app(engine, config, registry=CollectorRegistry())) as client:
        models = client.get("/v1/models").json()["models"]
        [model] = [m for m in models if m["name"] == FEATURES_MODEL]
        assert model["latest_run"]["status"] == "critical" and model["fallback_active"]
        page = client.get(f"/v1/models/{FEATURES_MODEL}/runs").json()
        assert [r["status"] for r in page["runs"]] == ["critical", "critical", "ok", "ok"]
        newest = page["runs"][0]
        assert newest["reasons"] and all(r.startswith("drift: ") for r in newest["reasons"])
        answer = client.get(f"/v1/runs/{newest['id']}")
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["summary"]["checks"]["performance"] == {"status": "not_applicable",
                                                           "reason": FEATURES_ONLY}
        # The served document reads back as the run that was stored.
        served = CheckRun.from_dict(doc["summary"])
        assert replace(served, run_id=newest["id"]) == runs[-1]
        assert {m["check"] for m in doc["metrics"]} == {"run", "schema", "drift", "service"}
        scrape = client.get("/metrics")
        assert scrape.status_code == 200 and "mqm_accuracy_ratio{" not in scrape.text
