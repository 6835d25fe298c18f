"""A regressor's run carries its estimated MAE and RMSE (DLE), on both backends: the loss
models are fitted once per reference content and stored with its profile, the section reads
back typed, the figures are stored and exported, and an estimated rise warns without
flipping the fallback flag on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.config import load_config
from monitor.fallback.flag import flag_document
from monitor.results import EstimatedLossResult, PerformanceResult
from monitor.run import reference
from monitor.run.model import reference_version
from monitor.run.reference import decode_profile, load_reference_data, profile_key
from monitor.schema import load_schema
from monitor.serve.metrics import build_registry
from monitor.store.profiles import load_profile
from monitor.store.runs import latest_runs
from tests.regressor import MODEL, NOW, checked_regressor, regressor, rows


@pytest.fixture(autouse=True)
def no_memory_cache() -> Iterator[None]:
    reference._CACHE.clear()
    yield
    reference._CACHE.clear()


@pytest.fixture
def checked(engine: sa.Engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Day 1 as the reference, labelled; day 2 shifted, no labels yet; both checked. The
    shift also drifts the inputs: drift warns here (severity: warn) so that the run's
    verdict is the warnings' alone."""
    return checked_regressor(engine, tmp_path, fallback={"trip_after": 1},
                             drift={"severity": "warn"})


def test_a_regressor_run_estimates_its_mae_and_warns_on_a_shift(engine: sa.Engine,
                                                                 checked) -> None:  # type: ignore[no-untyped-def]
    config, _schema, runs = checked
    calm, shifted = (r.performance for r in runs)
    assert isinstance(calm, PerformanceResult) and isinstance(shifted, PerformanceResult)
    calm_est, shifted_est = calm.estimated, shifted.estimated
    assert isinstance(calm_est, EstimatedLossResult)
    assert isinstance(shifted_est, EstimatedLossResult)
    # Day 1: labelled and like the reference; the estimate agrees with the realized MAE.
    assert calm.mature and calm.status == "ok" and calm_est.status == "ok"
    assert calm_est.rows_used == 1_500 and calm_est.realized_mae == calm.metrics["mae"]
    assert calm_est.lower_bound is not None and calm_est.upper_bound is not None
    assert calm_est.lower_bound <= calm.metrics["mae"] <= calm_est.upper_bound  # type: ignore[operator]
    # Day 2: no labels, so only the estimate can tell; it warns, the run is a warning.
    assert (shifted.labelled_rows, shifted_est.status) == (0, "warn")
    assert shifted_est.rise is not None and shifted_est.rise > 0.3
    assert shifted.status == "warn" and runs[1].status == "warn"
    assert any(r.startswith("performance: estimated mae") for r in runs[1].reasons)
    # A warning never flips the flag on its own (fallback.bad_statuses: critical), even
    # with trip_after: 1.
    assert flag_document(engine, config, MODEL, NOW)["active"] is False
    # Stored: the section reads back typed, its figures are stored and exported.
    stored = latest_runs(engine, MODEL)
    newest = max(stored, key=lambda r: r.window_end)
    assert newest.run.performance == shifted
    registry = build_registry(engine, config, clock=lambda: NOW)
    labels = {"model": MODEL, "version": ""}

    def get(name: str, **more: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **more})

    for name in ("mae", "rmse"):
        assert get("mqm_estimated_performance_metric", metric=name) == shifted_est.metrics[name]
        assert get("mqm_estimated_performance_metric_sampling_error",
                   metric=name) == shifted_est.sampling_errors[name]
        assert get("mqm_estimated_performance_metric_lower",
                   metric=name) == shifted_est.lower_bounds[name]
        assert get("mqm_estimated_performance_metric_upper",
                   metric=name) == shifted_est.upper_bounds[name]
    assert get("mqm_estimated_performance_metric_drop", metric="mae") == shifted_est.rise
    assert get("mqm_estimated_accuracy_ratio") is None  # a regressor
    assert get("mqm_check_status", check="performance", status="warn") == 1.0


def test_the_loss_models_are_fitted_once_and_stored(engine: sa.Engine, checked) -> None:  # type: ignore[no-untyped-def]
    config, schema, _ = checked
    model_cfg = config.model(MODEL)
    version = reference_version(model_cfg.reference)
    key = profile_key(model_cfg, schema, version)
    blob = load_profile(engine, key)
    assert blob is not None
    stored = decode_profile(blob)
    assert stored.loss_estimator is not None and stored.estimator is None
    assert stored.loss_estimator.reference_rows == 5_000
    assert stored.loss_estimator.reference_mae == pytest.approx(stored.metrics["mae"])
    # A later process reads the stored profile and fits nothing: its models predict the
    # same as the ones fitted.
    reference._CACHE.clear()
    read = load_reference_data(model_cfg, schema, version, engine=engine)
    window = rows(2_000, 9, shifted=True)
    assert read.loss_estimator is not None
    assert read.loss_estimator.estimate(window, window["prediction"]) == \
        stored.loss_estimator.estimate(window, window["prediction"])



def test_a_regressor_profile_key_names_the_scikit_learn_version(
        make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The loss models are pickled: a profile pickled by another scikit-learn is never
    unpickled but built again, as its key differs. A classifier's key does not depend on
    it (its profile holds no pickle)."""
    import importlib.metadata

    config = load_config(regressor(tmp_path, f"sqlite:///{tmp_path / 'mqm.db'}"))
    model_cfg = config.model(MODEL)
    schema = load_schema(model_cfg.schema_path)
    _, loan = make_config()
    loan_cfg = loan.model("loan_default")
    loan_schema = load_schema(loan_cfg.schema_path)
    before = (profile_key(model_cfg, schema, "v"), profile_key(loan_cfg, loan_schema, "v"))
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0-other" if
                        name == "scikit-learn" else real(name))
    after = (profile_key(model_cfg, schema, "v"), profile_key(loan_cfg, loan_schema, "v"))
    assert before[0] != after[0]
    assert before[1] == after[1]


@pytest.mark.parametrize("sampled", [False, True])
def test_the_estimate_reads_the_inputs_of_the_rows_the_model_answered(
        engine: sa.Engine, tmp_path: Path, sampled: bool) -> None:
    """Error rows (no prediction) are left out, and each answered row's inputs go with its
    own prediction: the run's estimate equals the stored estimator's on exactly those rows,
    read whole or, past drift.max_exact_rows, on the run's seeded sample of the window."""
    import numpy as np

    from monitor.run.evaluate import _seed
    from monitor.store.sources import BuiltinSource

    extra = {"drift": {"max_exact_rows": 1_000}} if sampled else {}
    config, schema, runs = checked_regressor(engine, tmp_path, errors_every=10, **extra)
    run = runs[1]
    assert run.sampled is sampled
    window = BuiltinSource(engine, MODEL).read_window(run.start, run.end)
    keep = np.ones(len(window.meta), dtype=bool)
    if sampled:
        keep = np.random.default_rng(_seed(MODEL, run.start)).random(len(keep)) < 1_000 / 1_500
    answered = keep & window.meta["prediction"].notna().to_numpy()
    features = window.features[answered].reset_index(drop=True)
    predictions = window.meta["prediction"][answered].reset_index(drop=True)
    ref = load_reference_data(config.model(MODEL), schema,
                              reference_version(config.model(MODEL).reference), engine=engine)
    assert ref.loss_estimator is not None
    rows, metrics, _ = ref.loss_estimator.estimate(features, predictions)
    est = run.performance.estimated
    assert isinstance(est, EstimatedLossResult)
    assert est.rows_used == rows == int(answered.sum()) < (1_000 if sampled else 1_500)
    assert est.metrics["mae"] == pytest.approx(metrics["mae"], rel=1e-12)
    assert est.metrics["rmse"] == pytest.approx(metrics["rmse"], rel=1e-12)
