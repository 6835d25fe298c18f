"""Estimated accuracy (CBPE): tracks the realized accuracy under covariate shift.

The data are simulated with a known P(y=1|x), so the realized accuracy is an
independent truth the estimate must come close to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.checks.estimated import AccuracyEstimator, check_estimated
from monitor.config import PerformanceConfig
from monitor.errors import MonitorError
from monitor.schema import FeatureSpec, ModelSchema, PredictionSpec, load_schema

ROOT = Path(__file__).resolve().parents[2]
N = 100_000
CONFIG = PerformanceConfig()


def make_schema(classes: list) -> ModelSchema:
    return ModelSchema(model="m", features=[FeatureSpec(name="x", type="float")],
                       prediction=PredictionSpec(type="int", classes=classes))


BINARY = make_schema([0, 1])


def binary_model(seed: int, *, spread: float, squash: float = 1.0):
    """Calibrated model P(y=1|x) = sigmoid(2x); a smaller ``spread`` of x moves p towards
    0.5 (covariate shift). ``squash`` < 1 logs probabilities pulled towards 0.5
    (miscalibrated, same ranking). Returns probabilities, labels, predictions."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-2 * rng.normal(0, spread, N)))
    y = (rng.uniform(size=N) < p).astype(int)
    logged = 0.5 + (p - 0.5) * squash
    proba = pd.DataFrame({"0": 1 - logged, "1": logged})
    return proba, pd.Series(y), pd.Series((logged >= 0.5).astype(int))


def realized(y: pd.Series, pred: pd.Series) -> float:
    return float((y.to_numpy() == pred.to_numpy()).mean())


def naive(proba: pd.DataFrame, pred: pd.Series) -> float:
    """The estimate without calibration: the logged probability of the predicted class."""
    return float(proba.to_numpy()[np.arange(len(pred)), pred.to_numpy()].mean())


def test_calibrated_binary_model_under_covariate_shift() -> None:
    ref_p, ref_y, ref_pred = binary_model(0, spread=1.5)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, BINARY)
    assert est.reference_accuracy == pytest.approx(realized(ref_y, ref_pred))
    assert est.reference_estimated == pytest.approx(est.reference_accuracy, abs=0.01)
    assert est.reference_rows == N
    cur_p, cur_y, cur_pred = binary_model(1, spread=0.4)
    truth = realized(cur_y, cur_pred)
    assert truth < est.reference_accuracy - 0.15  # the shift really costs accuracy
    assert est.estimate(cur_p, cur_pred) == pytest.approx(truth, abs=0.01)
    res = check_estimated(est, cur_p, cur_pred, realized_accuracy=truth, config=CONFIG)
    assert (res.status, res.rows_used, res.realized_accuracy) == ("warn", N, truth)
    assert res.drop == pytest.approx(est.reference_accuracy - res.estimated_accuracy)
    assert res.reasons[0].startswith("estimated accuracy ") and "> allowed 0.050" in res.reasons[0]
    json.dumps(res.as_dict())


def test_calibration_corrects_squashed_probabilities() -> None:
    ref_p, ref_y, ref_pred = binary_model(2, spread=1.5, squash=0.4)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, BINARY)
    assert est.reference_estimated == pytest.approx(realized(ref_y, ref_pred), abs=0.01)
    assert naive(ref_p, ref_pred) < realized(ref_y, ref_pred) - 0.1
    cur_p, cur_y, cur_pred = binary_model(3, spread=0.4, squash=0.4)
    truth = realized(cur_y, cur_pred)
    assert est.estimate(cur_p, cur_pred) == pytest.approx(truth, abs=0.01)
    assert abs(naive(cur_p, cur_pred) - truth) > 0.05


def multiclass_model(seed: int, *, spread: float, temperature: float = 1.0):
    """Three classes with P(y|x) = softmax(W x); ``temperature`` > 1 logs flattened
    probabilities (miscalibrated, same argmax)."""
    rng = np.random.default_rng(seed)
    weights = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    logits = rng.normal(0, spread, (N, 2)) @ weights.T
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.uniform(size=(N, 1)) > p.cumsum(axis=1)).sum(axis=1)
    logged = np.exp(logits / temperature)
    logged /= logged.sum(axis=1, keepdims=True)
    proba = pd.DataFrame(logged, columns=["0", "1", "2"])
    return proba, pd.Series(y), pd.Series(logged.argmax(axis=1))


def test_multiclass_model_under_covariate_shift() -> None:
    schema = make_schema([0, 1, 2])
    ref_p, ref_y, ref_pred = multiclass_model(4, spread=1.5)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, schema)
    assert est.reference_estimated == pytest.approx(realized(ref_y, ref_pred), abs=0.01)
    cur_p, cur_y, cur_pred = multiclass_model(5, spread=0.5)
    truth = realized(cur_y, cur_pred)
    assert truth < est.reference_accuracy - 0.1
    assert est.estimate(cur_p, cur_pred) == pytest.approx(truth, abs=0.01)


def test_multiclass_calibration_is_one_vs_rest_and_approximate() -> None:
    # Calibrating each class on its own score and renormalising (as NannyML) is not a
    # joint calibration: with flattened probabilities it lands within about 0.01-0.02,
    # where the uncalibrated estimate is off by 0.16.
    schema = make_schema([0, 1, 2])
    ref_p, ref_y, ref_pred = multiclass_model(4, spread=1.5, temperature=2.5)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, schema)
    assert est.reference_estimated == pytest.approx(realized(ref_y, ref_pred), abs=0.02)
    cur_p, cur_y, cur_pred = multiclass_model(5, spread=0.5, temperature=2.5)
    truth = realized(cur_y, cur_pred)
    assert est.estimate(cur_p, cur_pred) == pytest.approx(truth, abs=0.02)
    assert abs(naive(cur_p, cur_pred) - truth) > 0.1


def test_missing_probabilities_skip_the_check() -> None:
    ref_p, ref_y, ref_pred = binary_model(0, spread=1.5)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, BINARY)
    res = check_estimated(est, None, ref_pred, realized_accuracy=None, config=CONFIG)
    assert (res.status, res.estimated_accuracy, res.rows_used) == ("skipped", None, 0)
    assert res.reasons == ("the model logs no probabilities",)
    assert res.reference_accuracy == est.reference_accuracy
    empty = ref_p.iloc[:10] * np.nan
    assert est.estimate(empty, ref_pred.iloc[:10]) is None
    res = check_estimated(est, empty, ref_pred.iloc[:10], realized_accuracy=None, config=CONFIG)
    assert res.status == "skipped" and "no row" in res.reasons[0]
    res = check_estimated(None, ref_p, ref_pred, realized_accuracy=0.8, config=CONFIG)
    assert (res.status, res.reference_accuracy, res.realized_accuracy) == ("skipped", None, 0.8)


def test_rows_without_probabilities_are_left_out() -> None:
    ref_p, ref_y, ref_pred = binary_model(0, spread=1.5)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, BINARY)
    cur_p = ref_p.iloc[:1000].copy()
    cur_p.iloc[:300] = np.nan
    res = check_estimated(est, cur_p, ref_pred.iloc[:1000], realized_accuracy=None,
                          config=CONFIG)
    assert res.rows_used == 700
    assert res.estimated_accuracy == pytest.approx(
        est.estimate(ref_p.iloc[300:1000], ref_pred.iloc[300:1000]))


def test_allowed_estimated_drop_sets_the_warning() -> None:
    ref_p, ref_y, ref_pred = binary_model(0, spread=1.5)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, BINARY)
    cur_p, _, cur_pred = binary_model(1, spread=1.0)
    drop = est.reference_accuracy - est.estimate(cur_p, cur_pred)
    loose = PerformanceConfig(allowed_estimated_drop=drop + 0.01)
    tight = PerformanceConfig(allowed_estimated_drop=drop - 0.01)
    assert check_estimated(est, cur_p, cur_pred, realized_accuracy=None,
                           config=loose).status == "ok"
    assert check_estimated(est, cur_p, cur_pred, realized_accuracy=None,
                           config=tight).status == "warn"


def test_labels_as_text_and_one_logged_column() -> None:
    ref_p, ref_y, ref_pred = binary_model(0, spread=1.5)
    est = AccuracyEstimator.fit(ref_p, ref_y.astype(float), ref_pred, BINARY)
    # Predictions as text and only the negative class's column: the same estimate.
    got = est.estimate(ref_p[["0"]], ref_pred.astype(str))
    assert got == pytest.approx(est.reference_estimated)
    # A prediction outside the classes is never right.
    odd = est.correct_probability(ref_p.iloc[:3], pd.Series([7, 1, 0]))
    assert odd[0] == 0.0 and 0 < odd[1] < 1


def test_fit_refuses_what_it_cannot_use() -> None:
    ref_p, ref_y, ref_pred = binary_model(0, spread=1.5)
    no_labels = pd.Series([None] * N, dtype=object)
    with pytest.raises(MonitorError, match="no reference row"):
        AccuracyEstimator.fit(ref_p, no_labels, ref_pred, BINARY)
    regression = ModelSchema(model="r", task="regression",
                             features=[FeatureSpec(name="x", type="float")],
                             prediction=PredictionSpec(type="float"))
    with pytest.raises(MonitorError, match="classes"):
        AccuracyEstimator.fit(ref_p, ref_y, ref_pred, regression)


def _sample_probabilities(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["proba_0", "proba_1"]].rename(columns={"proba_0": "0", "proba_1": "1"})


def test_sample_reference_fits_and_estimates_its_own_accuracy() -> None:
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    schema = load_schema(ROOT / "schemas" / "loan_default.yaml")
    est = AccuracyEstimator.fit(_sample_probabilities(ref), ref["defaulted"], ref["prediction"],
                                schema)
    assert est.reference_accuracy == pytest.approx(
        float((ref["prediction"] == ref["defaulted"]).mean()))
    assert est.estimate(_sample_probabilities(ref), ref["prediction"]) == pytest.approx(
        est.reference_accuracy, abs=0.01)


def test_sample_production_logs_before_and_after_the_drift() -> None:
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    schema = load_schema(ROOT / "schemas" / "loan_default.yaml")
    est = AccuracyEstimator.fit(_sample_probabilities(ref), ref["defaulted"], ref["prediction"],
                                schema)
    logs = pd.read_parquet(ROOT / "sample_data" / "production_logs.parquet")
    labels = pd.read_parquet(ROOT / "sample_data" / "labels.parquet")
    logs = logs[~logs["error"].astype(bool)].merge(
        labels[["request_id", "defaulted"]], on="request_id", how="left")
    drifted = logs["timestamp"] >= pd.Timestamp("2026-10-08", tz="UTC")
    for week, expect in ((logs[~drifted], "ok"), (logs[drifted], "warn")):
        has = week["defaulted"].notna()
        truth = float((week["prediction"][has] == week["defaulted"][has]).mean())
        res = check_estimated(est, _sample_probabilities(week), week["prediction"],
                              realized_accuracy=truth, config=CONFIG)
        assert res.status == expect
        if expect == "ok":  # before the drift: the estimate tracks the labels
            assert res.estimated_accuracy == pytest.approx(truth, abs=0.01)
        else:  # covariate and concept drift: the estimate sees only the covariate part
            assert truth < res.estimated_accuracy < est.reference_accuracy - 0.05


def test_reference_profile_records_the_calibration_and_survives_a_failed_fit(
        make_config, tmp_path: Path) -> None:
    from monitor.run.reference import load_reference_data

    schema = load_schema(ROOT / "schemas" / "loan_default.yaml")
    _, cfg = make_config()
    data = load_reference_data(cfg.models["loan_default"], schema, "v-sample")
    assert data.estimator is not None and data.estimator_error is None
    # The sample model's scores are calibrated already: isotonic would not help.
    assert data.estimator.calibrated_classes == ()
    assert data.estimator.calibration_notes["1"].startswith("not calibrated: ")
    _, cfg = make_config(performance={"estimated_calibration": "always"})
    data = load_reference_data(cfg.models["loan_default"], schema, "v-sample")
    assert data.estimator is not None and data.estimator.calibrated_classes == ("1",)
    # No labels at all: no estimator, and why; the drift profile is still there.
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    ref["defaulted"] = None
    ref.to_parquet(tmp_path / "unlabelled.parquet")
    _, cfg = make_config(reference=str(tmp_path / "unlabelled.parquet"))
    data = load_reference_data(cfg.models["loan_default"], schema, "v-unlabelled")
    assert data.estimator is None and data.drift_profile is not None
    assert data.estimator_error is not None and "no reference row" in data.estimator_error
    res = check_estimated(None, _sample_probabilities(ref), ref["prediction"],
                          realized_accuracy=None, config=CONFIG,
                          unavailable=data.estimator_error)
    assert res.status == "skipped" and res.reasons == (data.estimator_error,)


@pytest.mark.parametrize("seed", range(6))
def test_the_isotonic_curve_predicts_as_scikit_learn(seed: int) -> None:
    from sklearn.isotonic import IsotonicRegression

    from monitor.checks.calibration import IsotonicCurve

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    # Scores with many ties (rounded), outcomes 0/1; new scores inside, on and outside the
    # fitted range, and on the fitted points themselves.
    scores = np.round(rng.beta(2, 3, n), int(rng.integers(1, 4)))
    outcome = (rng.random(n) < scores).astype(int)
    fresh = np.r_[rng.uniform(-0.2, 1.2, 5000), scores, scores.min(), scores.max(), 0.0, 1.0]
    iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores, outcome)
    curve = IsotonicCurve.fit(scores, outcome)
    assert np.array_equal(curve.predict(fresh), iso.predict(fresh))
    # One distinct score fitted: a constant, as scikit-learn predicts it.
    same = np.full(20, 0.3)
    iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(same, outcome[:20])
    assert np.array_equal(IsotonicCurve.fit(same, outcome[:20]).predict(fresh),
                          iso.predict(fresh))


def _logged(n: int, seed: int, *, spread: float, shift: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated model's P(y=1|x) = sigmoid(2x - 1) over x ~ N(shift, spread), and labels
    drawn from it."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(2 * rng.normal(shift, spread, n) - 1)))
    return p, (rng.uniform(size=n) < p).astype(int)


@pytest.mark.parametrize(("spread", "shift"), [(1.5, 0.0), (0.5, 0.0), (1.0, 1.0)])
def test_every_estimated_metric_is_the_expected_one_by_monte_carlo(spread: float,
                                                                   shift: float) -> None:
    """CBPE's five metrics against their expectation over the labels: 200 label sets drawn
    from the window's true probabilities, each scored by scikit-learn, averaged. Tolerance
    0.005: the estimate is a ratio of expected counts, not the expected ratio (a gap of
    order 1/n), and its calibration is fitted on 50,000 reference rows; measured gaps are
    below 0.003, the Monte-Carlo standard errors below 0.001. The shifted windows move the
    metrics by up to 0.37 from the reference's, so an estimate that did not follow fails."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    ref_p, ref_y = _logged(50_000, 0, spread=1.5)
    est = AccuracyEstimator.fit(pd.DataFrame({"0": 1 - ref_p, "1": ref_p}), pd.Series(ref_y),
                                pd.Series((ref_p >= 0.5).astype(int)), BINARY)
    p, _ = _logged(5_000, 1, spread=spread, shift=shift)
    pred = (p >= 0.5).astype(int)
    res = check_estimated(est, pd.DataFrame({"0": 1 - p, "1": p}), pd.Series(pred),
                          realized_accuracy=None, config=CONFIG)
    rng = np.random.default_rng(9)
    scorers = {"accuracy": accuracy_score, "f1": f1_score, "precision": precision_score,
               "recall": recall_score}
    draws: dict[str, list[float]] = {name: [] for name in (*scorers, "roc_auc")}
    for _ in range(200):
        y = (rng.uniform(size=len(p)) < p).astype(int)
        for name, score in scorers.items():
            draws[name].append(float(score(y, pred)))
        draws["roc_auc"].append(float(roc_auc_score(y, p)))
    ref_res = check_estimated(est, pd.DataFrame({"0": 1 - ref_p, "1": ref_p}),
                              pd.Series((ref_p >= 0.5).astype(int)), realized_accuracy=None,
                              config=CONFIG)
    moved = 0.0
    for name, values in draws.items():
        expected = float(np.mean(values))
        assert res.metrics[name] == pytest.approx(expected, abs=0.005), name
        moved = max(moved, abs(expected - ref_res.metrics[name]))  # type: ignore[operator]
    assert moved > 0.05 if (spread, shift) != (1.5, 0.0) else moved < 0.02


@pytest.mark.parametrize("classes", [[0, 1], [0, 1, 2]], ids=["binary", "multiclass"])
def test_rows_prepared_once_estimate_each_subset_as_its_own_frames(classes: list) -> None:
    # The window's estimate and each version's share one preparation of the rows; every
    # figure must be the one the subset's own frames give, bit for bit.
    schema = make_schema(classes)
    model = binary_model if len(classes) == 2 else multiclass_model
    kwargs: dict = {"squash": 0.5} if len(classes) == 2 else {"temperature": 2.0}
    ref_p, ref_y, ref_pred = model(6, spread=1.5, **kwargs)
    est = AccuracyEstimator.fit(ref_p, ref_y, ref_pred, schema)
    assert est.calibrated_classes  # the calibrated path is the one exercised
    cur_p, _, cur_pred = model(7, spread=0.7, **kwargs)
    cur_p, cur_pred = cur_p.iloc[:20_000].copy(), cur_pred.iloc[:20_000].astype(object)
    rng = np.random.default_rng(8)
    cur_p.iloc[rng.choice(len(cur_p), 500, replace=False), 0] = np.nan  # unusable rows
    cur_pred.iloc[rng.choice(len(cur_pred), 300, replace=False)] = None
    cur_pred.iloc[rng.choice(len(cur_pred), 200, replace=False)] = 9  # outside the classes
    rows = est.rows(cur_p, cur_pred)
    assert est.estimate_rows(rows) == est.estimate_metrics(cur_p, cur_pred)
    for share in (0.7, 0.3, 0.001):
        among = rng.uniform(size=len(cur_p)) < share
        want = est.estimate_metrics(cur_p[among].reset_index(drop=True),
                                    cur_pred[among].reset_index(drop=True))
        assert est.estimate_rows(rows, among) == want
        # A version's accuracy alone: the same double and sampling error.
        used, metrics, errors = want
        assert est.accuracy_of_rows(rows, among) == (used, metrics["accuracy"],
                                                     errors["accuracy"])
    assert est.accuracy_of_rows(rows, np.zeros(len(cur_p), dtype=bool)) == (0, None, None)
    res = check_estimated(est, cur_p, cur_pred, realized_accuracy=None, config=CONFIG,
                          rows=rows)
    assert res == check_estimated(est, cur_p, cur_pred, realized_accuracy=None, config=CONFIG)
