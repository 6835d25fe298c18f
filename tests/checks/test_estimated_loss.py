"""Estimated MAE and RMSE without labels (direct loss estimation), against independent truths.

NannyML (which has DLE) cannot be installed beside mqm's locked packages: nannyml 0.13.1
requires python-dateutil<3, and mqm locks python-dateutil 4.0.0. So the truth is computed
here. The data are simulated with a known noise: y = f(x) + sigma(x) * N(0, 1), and the
model predicts f(x), so a row's expected absolute error is sigma(x) * sqrt(2 / pi) and its
expected squared error sigma(x)^2. Over a window, the mean of those (the conditional
expected MAE and MSE given its inputs) is exactly what DLE estimates; the realized MAE of
the window, and of a large labelled sample drawn from the same distribution, must lie within
the estimate's band (3 sampling errors of the window); the RMSE within its band plus a
stated model error (``RMSE_MODEL_ERROR``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from monitor.checks.estimated import with_estimate
from monitor.checks.estimated_loss import LossEstimator, check_estimated_loss, loss_band
from monitor.config import PerformanceConfig
from monitor.errors import MonitorError
from monitor.results import (
    CheckRun,
    EstimatedLossResult,
    EstimatedResult,
    PerformanceResult,
)

CONFIG = PerformanceConfig()
KINDS = {"x1": "num", "x2": "num", "c": "cat"}
ROOT_2_OVER_PI = math.sqrt(2 / math.pi)


def sigma(x1: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The noise's spread: larger far from 0 in x1, and in category c."""
    return 0.5 + np.abs(x1) + np.where(c == "c", 1.0, 0.0)


def draw(n: int, seed: int, *, mean: float = 0.0, spread: float = 1.5
         ) -> tuple[pd.DataFrame, pd.Series, pd.Series, np.ndarray]:
    """Inputs, labels, predictions and each row's sigma. ``mean`` and ``spread`` move x1:
    covariate shift, P(y | x) unchanged."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(mean, spread, n)
    x2 = rng.normal(0, 1, n)
    c = rng.choice(np.array(["a", "b", "c"]), n, p=[0.5, 0.3, 0.2])
    s = sigma(x1, c)
    f = 2 * x1 - x2 + np.where(c == "b", 1.0, 0.0)
    y = f + rng.normal(0, 1, n) * s
    return pd.DataFrame({"x1": x1, "x2": x2, "c": c}), pd.Series(y), pd.Series(f), s


@pytest.fixture(scope="module")
def estimator() -> LossEstimator:
    features, y, pred, _ = draw(20_000, 0)
    return LossEstimator.fit(features, KINDS, y, pred)


def realized(y: pd.Series, pred: pd.Series) -> tuple[float, float]:
    error = y.to_numpy() - pred.to_numpy()
    return float(np.mean(np.abs(error))), float(np.sqrt(np.mean(error**2)))


# The RMSE's tolerance: its band (3 sampling errors of the window, NannyML's delta-method
# formula) plus 3% of the truth. Squared errors are heavy-tailed (here their kurtosis is
# above 100), so the boosted model of e^2 fitted on 20,000 reference rows carries a model
# error of its own, 1-3% on these windows (measured over seeds and shifts), that the
# sampling error of the window alone does not include. The MAE needs no such allowance.
RMSE_MODEL_ERROR = 0.03


def near_rmse(res: EstimatedLossResult, truth: float) -> bool:
    estimate, error = res.metrics["rmse"], res.sampling_errors["rmse"]
    assert estimate is not None and error is not None
    return abs(estimate - truth) <= 3 * error + RMSE_MODEL_ERROR * truth


def test_the_reference_figures_are_its_realized_ones(estimator: LossEstimator) -> None:
    _features, y, pred, _ = draw(20_000, 0)
    mae, rmse = realized(y, pred)
    assert estimator.reference_mae == pytest.approx(mae, rel=1e-12)
    assert estimator.reference_rmse == pytest.approx(rmse, rel=1e-12)
    assert estimator.reference_rows == 20_000
    # Squared loss: the trees' mean on the rows they were fitted on is the targets' mean.
    assert estimator.reference_estimated_mae == pytest.approx(mae, rel=1e-6)
    assert estimator.reference_estimated_rmse == pytest.approx(rmse, rel=1e-6)
    # NannyML's sampling error components: the population std of |e| and of e^2.
    error = y.to_numpy() - pred.to_numpy()
    assert estimator.absolute_spread == pytest.approx(np.std(np.abs(error)), rel=1e-12)
    assert estimator.squared_spread == pytest.approx(np.std(error**2), rel=1e-12)


def test_no_shift_the_estimate_stays_with_the_reference(estimator: LossEstimator) -> None:
    features, y, pred, s = draw(20_000, 1)
    res = check_estimated_loss(estimator, features, pred, realized_mae=None, config=CONFIG)
    assert (res.status, res.rows_used, res.reasons) == ("ok", 20_000, ())
    assert res.estimated_mae is not None and res.rise is not None
    assert abs(res.rise) < 0.02  # well inside allowed_estimated_rise (10%)
    mae, rmse = realized(y, pred)
    assert res.lower_bound is not None and res.upper_bound is not None
    assert res.lower_bound <= mae <= res.upper_bound
    assert res.lower_bound <= estimator.reference_mae <= res.upper_bound
    assert near_rmse(res, rmse)
    # Against the conditional expectation given the window's inputs: model error only.
    assert res.estimated_mae == pytest.approx(np.mean(s) * ROOT_2_OVER_PI, rel=0.02)
    assert res.metrics["rmse"] == pytest.approx(math.sqrt(np.mean(s**2)), rel=0.02)


@pytest.mark.parametrize(("mean", "spread"), [(2.0, 1.0), (1.5, 1.5)])
def test_covariate_shift_raises_the_estimate_as_the_realized_mae(
        estimator: LossEstimator, mean: float, spread: float) -> None:
    features, y, pred, _s = draw(20_000, 2, mean=mean, spread=spread)
    res = check_estimated_loss(estimator, features, pred, realized_mae=None, config=CONFIG)
    assert res.status == "warn"
    assert res.rise is not None and res.rise > 0.3  # the shift really costs accuracy
    assert res.reasons[0].startswith("estimated mae ") and "> allowed 10.0%" in res.reasons[0]
    assert "the reference lies below the 3-sigma band" in res.reasons[0]
    assert res.lower_bound is not None and res.upper_bound is not None
    # The window's own realized MAE, and that of a large labelled sample of the same
    # distribution, lie in the band.
    mae, rmse = realized(y, pred)
    _, big_y, big_pred, big_s = draw(200_000, 3, mean=mean, spread=spread)
    big_mae, big_rmse = realized(big_y, big_pred)
    for truth in (mae, big_mae, float(np.mean(big_s)) * ROOT_2_OVER_PI):
        assert res.lower_bound <= truth <= res.upper_bound
    for truth in (rmse, big_rmse, math.sqrt(float(np.mean(big_s**2)))):
        assert near_rmse(res, truth)
    # Without the loss model (the reference MAE alone) the band would miss the truth.
    assert not res.lower_bound <= estimator.reference_mae <= res.upper_bound


def test_sampling_errors_are_nannyml_formulas(estimator: LossEstimator) -> None:
    features, _, pred, _ = draw(400, 4)
    rows, metrics, errors = estimator.estimate(features, pred)
    assert rows == 400
    assert errors["mae"] == pytest.approx(estimator.absolute_spread / math.sqrt(400))
    mse = estimator.reference_rmse**2
    assert errors["rmse"] == pytest.approx(
        math.sqrt(estimator.squared_spread**2 / (4 * 400 * mse)))
    assert loss_band(1.0, 0.5) == (0.0, 2.5)  # clipped at 0, not at 1
    assert loss_band(None, 0.5) == (None, None)
    assert metrics["mae"] is not None


def test_a_small_window_does_not_warn_on_noise(estimator: LossEstimator) -> None:
    """Thirty rows of a shifted window: the rise passes the allowance, but the band of so
    few rows holds the reference, so it is noted and does not warn; without the band rule
    (estimated_band: false) it warns."""
    features, _, pred, _ = draw(30, 5, mean=2.0, spread=0.5)
    res = check_estimated_loss(estimator, features, pred, realized_mae=None, config=CONFIG)
    assert res.rise is not None and res.rise > CONFIG.allowed_estimated_rise
    assert res.status == "ok"
    assert "within sampling error: the reference lies in the 3-sigma band" in res.reasons[0]
    strict = PerformanceConfig(estimated_band=False)
    res = check_estimated_loss(estimator, features, pred, realized_mae=None, config=strict)
    assert res.status == "warn" and "within" not in res.reasons[0]
    loose = PerformanceConfig(estimated_band=False, allowed_estimated_rise=res.rise + 0.01)
    res = check_estimated_loss(estimator, features, pred, realized_mae=None, config=loose)
    assert (res.status, res.reasons) == ("ok", ())


def test_inputs_the_reference_lacks_are_missing_values(estimator: LossEstimator) -> None:
    features, _, pred, _ = draw(2_000, 6)
    unseen = features.assign(c="zz")  # a category the reference never had
    assert estimator.estimate(unseen, pred)[1]["mae"] is not None
    absent = features.drop(columns=["x2"])  # a column the window lacks
    assert estimator.estimate(absent, pred)[1]["mae"] is not None
    # Rows without a numeric prediction are left out.
    holes = pred.astype(object).copy()
    holes.iloc[:500] = None
    rows, metrics, _ = estimator.estimate(features, holes)
    assert rows == 1_500
    assert metrics["mae"] == pytest.approx(
        estimator.estimate(features.iloc[500:], pred.iloc[500:])[1]["mae"])


def test_a_high_cardinality_category_keeps_its_most_frequent_values() -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    features = pd.DataFrame({"x1": rng.normal(size=n),
                             "id": rng.integers(0, 1_000, n).astype(str)})
    y = pd.Series(rng.normal(size=n))
    est = LossEstimator.fit(features, {"x1": "num", "id": "cat"}, y, pd.Series(np.zeros(n)))
    assert len(est.categories["id"]) == 254
    assert est.estimate(features, pd.Series(np.zeros(n)))[0] == n


def test_the_fit_refuses_what_it_cannot_use() -> None:
    features, y, pred, _ = draw(100, 8)
    with pytest.raises(MonitorError, match="too few"):
        LossEstimator.fit(features, KINDS, pd.Series([None] * 100), pred)
    with pytest.raises(MonitorError, match="input column"):
        LossEstimator.fit(features.drop(columns=["c"]), KINDS, y, pred)


def test_no_estimator_or_no_prediction_skips() -> None:
    features, _, pred, _ = draw(10, 9)
    res = check_estimated_loss(None, features, pred, realized_mae=1.0, config=CONFIG,
                               unavailable="no target column")
    assert (res.status, res.reasons, res.realized_mae) == ("skipped", ("no target column",),
                                                           1.0)


def test_the_estimator_stores_and_reads_back(estimator: LossEstimator) -> None:
    meta, arrays = estimator.to_parts()
    json.dumps(meta)
    back = LossEstimator.from_parts(json.loads(json.dumps(meta)), arrays)
    features, _, pred, _ = draw(3_000, 10, mean=1.0)
    assert back.estimate(features, pred) == estimator.estimate(features, pred)
    assert back.categories == estimator.categories


def test_the_section_round_trips_and_old_documents_read_back(estimator: LossEstimator
                                                             ) -> None:
    features, _, pred, _ = draw(5_000, 11, mean=2.0, spread=1.0)
    est = check_estimated_loss(estimator, features, pred, realized_mae=None, config=CONFIG)
    perf = PerformanceResult("regression", 5_000, 0, 0.0, False, {"mae": None, "rmse": None},
                             {"mae": 1.5, "rmse": 2.1}, {"mae": None, "rmse": None},
                             "skipped", ("not mature",))
    judged = with_estimate(perf, est)
    assert judged.status == "warn" and judged.reasons[-1] == est.reasons[0]
    run = CheckRun("m", pd.Timestamp("2026-10-01", tz="UTC").to_pydatetime(),
                   pd.Timestamp("2026-10-02", tz="UTC").to_pydatetime(), 5_000, "warn", (),
                   "h", "r", performance=judged)
    doc = json.loads(json.dumps(run.as_dict()))
    back = CheckRun.from_dict(doc)
    assert isinstance(back.performance, PerformanceResult)
    assert back.performance.estimated == est
    assert isinstance(back.performance.estimated, EstimatedLossResult)
    figures = {m.metric: m.value for m in back.metrics()}
    assert figures["estimated_mae"] == est.estimated_mae
    assert figures["estimated_mae_lower"] == est.lower_bound
    assert figures["estimated_rmse_upper"] == est.upper_bounds["rmse"]
    assert "estimated_accuracy" not in figures
    # A classifier's document of before the band fields still reads as its own kind.
    old = {"estimated_accuracy": 0.8, "reference_accuracy": 0.84, "drop": 0.04,
           "realized_accuracy": None, "rows_used": 10, "status": "ok", "reasons": []}
    doc["checks"]["performance"]["estimated"] = old
    back = CheckRun.from_dict(doc)
    assert isinstance(back.performance, PerformanceResult)
    assert isinstance(back.performance.estimated, EstimatedResult)
    assert back.performance.estimated.lower_bounds == {}
    # An object of neither shape is refused, naming the field.
    doc["checks"]["performance"]["estimated"] = {"rows_used": 10}
    with pytest.raises(ValueError, match=r"checks\.performance\.estimated: has the fields "
                       "of no EstimatedResult or EstimatedLossResult"):
        CheckRun.from_dict(doc)


def test_a_realized_critical_verdict_is_not_softened(estimator: LossEstimator) -> None:
    """The estimate only ever adds a warning while the realized metrics are not judged: a
    critical realized verdict stays critical, an ok estimate leaves a verdict alone."""
    features, _, pred, _ = draw(5_000, 12, mean=2.0, spread=1.0)
    est = check_estimated_loss(estimator, features, pred, realized_mae=3.0, config=CONFIG)
    perf = PerformanceResult("regression", 5_000, 5_000, 1.0, True, {"mae": 3.0, "rmse": 4.0},
                             {"mae": 1.5, "rmse": 2.1}, {"mae": 1.0, "rmse": 0.9},
                             "critical", ("mae worse",))
    assert with_estimate(perf, est).status == "critical"
    assert with_estimate(perf, est).reasons == ("mae worse",)


def test_a_large_window_scores_a_sample_and_its_band_says_so(estimator: LossEstimator
                                                              ) -> None:
    """Past max_rows the trees score a uniform sample; the sampling error grows by the
    sample's own (the spread of the predicted losses over its square root), so the band
    still holds the estimate on every row, and a rerun draws the same sample."""
    features, _, pred, _ = draw(90_000, 13, mean=1.0, spread=1.0)
    rows, full, full_errors = estimator.estimate(features, pred)
    assert rows == 90_000 and full_errors == estimator.sampling_errors(90_000)
    rows, sampled, errors = estimator.estimate(features, pred, max_rows=10_000)
    assert rows == 90_000  # the window's rows, not the sample's
    assert sampled != full
    for name in ("mae", "rmse"):
        nannyml, widened = full_errors[name], errors[name]
        assert nannyml is not None and widened is not None and widened > 1.5 * nannyml
        assert abs(sampled[name] - full[name]) <= 3 * widened  # type: ignore[operator]
    assert estimator.estimate(features, pred, max_rows=10_000)[1] == sampled
