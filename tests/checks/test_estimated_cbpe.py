"""The estimate equals NannyML's CBPE: the calibration decision, the five expected metrics,
their sampling errors and confidence bands, within 1e-9, against the port of NannyML's own
code in ``cbpe_oracle`` (bench/estimate_vs_nannyml.py holds the port equal to NannyML).

Models are fitted on data that ships with scikit-learn; the window is a held-out part,
either as drawn or shifted (the rows above the median of one feature: covariate shift).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from monitor.checks.calibration import decide_calibration
from monitor.checks.estimated import AccuracyEstimator, check_estimated
from monitor.config import PerformanceConfig
from monitor.results import EstimatedResult
from monitor.schema import FeatureSpec, ModelSchema, PredictionSpec
from monitor.typed_json import from_json
from tests.checks import cbpe_oracle

TOLERANCE = 1e-9


def make_schema(classes: list[Any]) -> ModelSchema:
    return ModelSchema(model="m", features=[FeatureSpec(name="x", type="float")],
                       prediction=PredictionSpec(type="int", classes=classes))


def scored(model: Any, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """The model's log: a probability column per class, the prediction and the label."""
    proba = model.predict_proba(x)
    frame = pd.DataFrame({f"p_{c}": proba[:, i] for i, c in enumerate(model.classes_)})
    frame["pred"] = np.asarray(model.classes_)[proba.argmax(axis=1)]
    frame["y"] = y
    return frame


DATASETS = {"breast_cancer": load_breast_cancer, "digits": load_digits, "wine": load_wine}
SHIFTED_BY = {"breast_cancer": 0, "digits": 20, "wine": 0}  # mean radius; a pixel; alcohol
MODELS = {"logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
          "forest": lambda: RandomForestClassifier(random_state=0),
          "naive_bayes": GaussianNB}


@functools.cache
def trained(dataset: str, model: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray,
                                               np.ndarray]:
    """Train on 40 %; the reference is the next 30 %, windows come from the last 30 %."""
    x, y = DATASETS[dataset](return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.6, random_state=0,
                                                        stratify=y)
    x_ref, x_pool, y_ref, y_pool = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    random_state=0, stratify=y_rest)
    return MODELS[model]().fit(x_train, y_train), x_ref, y_ref, x_pool, y_pool


def reference_and_window(dataset: str, model: str, shift: bool
                         ) -> tuple[pd.DataFrame, pd.DataFrame, list[Any]]:
    """The reference and a window (shifted: the rows above the median of one feature)."""
    fitted, x_ref, y_ref, x_pool, y_pool = trained(dataset, model)
    if shift:
        feature = x_pool[:, SHIFTED_BY[dataset]]
        keep = feature > np.median(feature)
        x_pool, y_pool = x_pool[keep], y_pool[keep]
    return (scored(fitted, x_ref, y_ref), scored(fitted, x_pool, y_pool),
            list(fitted.classes_))


def mqm_estimate(reference: pd.DataFrame, window: pd.DataFrame, classes: list[Any],
                 config: PerformanceConfig | None = None
                 ) -> tuple[AccuracyEstimator, EstimatedResult]:
    def proba(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({str(c): frame[f"p_{c}"] for c in classes})

    estimator = AccuracyEstimator.fit(proba(reference), reference["y"], reference["pred"],
                                      make_schema(classes))
    result = check_estimated(estimator, proba(window), window["pred"], realized_accuracy=None,
                             config=config or PerformanceConfig())
    return estimator, result


CASES = [(d, m, s) for d, m in [("breast_cancer", "naive_bayes"), ("breast_cancer", "forest"),
                                ("breast_cancer", "logistic"), ("digits", "naive_bayes"),
                                ("wine", "forest")]
         for s in (False, True)]


@pytest.mark.parametrize(("dataset", "model", "shift"), CASES)
def test_estimate_equals_nannyml_on_real_data(dataset: str, model: str, shift: bool) -> None:
    reference, window, classes = reference_and_window(dataset, model, shift)
    expected = cbpe_oracle.cbpe(reference, window, {c: f"p_{c}" for c in classes})
    estimator, result = mqm_estimate(reference, window, classes)
    want_calibrated = tuple(str(c) for c, flag in expected["calibrated"].items() if flag)
    assert sorted(estimator.calibrated_classes) == sorted(want_calibrated)
    assert result.calibrated == estimator.calibrated_classes
    assert set(result.calibration) == {str(c) for c in expected["calibrated"]}
    assert result.rows_used == len(window)
    for metric, want in expected["metrics"].items():
        assert result.metrics[metric] == pytest.approx(want["value"], abs=TOLERANCE), metric
        assert result.sampling_errors[metric] == pytest.approx(want["sampling_error"],
                                                               abs=TOLERANCE), metric
    accuracy = expected["metrics"]["accuracy"]
    assert result.estimated_accuracy == result.metrics["accuracy"]
    assert result.sampling_error == result.sampling_errors["accuracy"]
    assert result.lower_bound == pytest.approx(accuracy["lower"], abs=TOLERANCE)
    assert result.upper_bound == pytest.approx(accuracy["upper"], abs=TOLERANCE)


def test_the_cases_cover_both_decisions_binary_and_multiclass() -> None:
    decisions = {}
    for dataset, model, _ in CASES[::2]:
        reference, window, classes = reference_and_window(dataset, model, False)
        estimator, _ = mqm_estimate(reference, window, classes)
        decisions[dataset, model] = (len(classes), estimator.calibrated_classes,
                                     estimator.scored_classes)
    binary = [d for d in decisions.values() if d[0] == 2]
    assert {bool(calibrated) for _, calibrated, _ in binary} == {True, False}
    multiclass = [d for d in decisions.values() if d[0] > 2]
    # Some classes calibrated, others not, within one model.
    assert any(0 < len(calibrated) < len(scored) for _, calibrated, scored in multiclass)


def test_calibration_decision_is_nannyml_rule_on_random_scores() -> None:
    rng = np.random.default_rng(7)
    outcomes = set()
    for _ in range(60):
        n = int(rng.integers(40, 2000))
        p = 1 / (1 + np.exp(-rng.normal(0, rng.uniform(0.3, 3.0), n)))
        y = (rng.uniform(size=n) < p).astype(int)
        scores = np.clip(0.5 + (p - 0.5) * rng.choice([0.5, 1.0, 1.3]), 0, 1)
        if rng.uniform() < 0.3:
            scores = np.round(scores, 1)  # ties: the sort order of equal scores matters
        want = cbpe_oracle.needs_calibration(y, scores, cbpe_oracle.Isotonic())
        got = decide_calibration(y, scores)
        assert got.calibrated == want
        assert got.ece_before is not None and got.ece_after is not None
        assert (got.ece_before > got.ece_after) == want
        outcomes.add(want)
    assert outcomes == {True, False}


def test_near_perfect_ranking_and_one_outcome_are_not_calibrated() -> None:
    y = np.r_[np.zeros(300, dtype=int), np.ones(300, dtype=int)]
    separated = np.r_[np.linspace(0.0, 0.4, 300), np.linspace(0.6, 1.0, 300)]
    decision = decide_calibration(y, separated)
    assert not cbpe_oracle.needs_calibration(y, separated, cbpe_oracle.Isotonic())
    assert (decision.calibrated, decision.roc_auc) == (False, 1.0)
    assert "ROC AUC 1.0000 > 0.999" in decision.reason
    ones = np.ones(100, dtype=int)
    assert not cbpe_oracle.needs_calibration(ones, separated[:100], cbpe_oracle.Isotonic())
    assert decide_calibration(ones, separated[:100]).reason.startswith("one outcome")


def test_too_few_rows_keep_the_raw_scores_where_nannyml_raises() -> None:
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0, 0])
    scores = np.array([0.1, 0.7, 0.4, 0.5, 0.9, 0.6, 0.3, 0.2, 0.65])
    with pytest.raises(ValueError):
        cbpe_oracle.needs_calibration(y, scores, cbpe_oracle.Isotonic())
    decision = decide_calibration(y, scores)
    assert not decision.calibrated and decision.reason.startswith("too few reference rows")


def test_calibration_is_recorded_with_its_reason() -> None:
    reference, window, classes = reference_and_window("breast_cancer", "forest", False)
    estimator, result = mqm_estimate(reference, window, classes)
    assert estimator.calibrated_classes == ()
    assert result.calibration["1"].startswith("not calibrated: expected calibration error")
    reference, window, classes = reference_and_window("breast_cancer", "naive_bayes", False)
    estimator, result = mqm_estimate(reference, window, classes)
    assert estimator.calibrated_classes == result.calibrated == ("1",)
    assert result.calibration["1"].startswith("calibrated: expected calibration error")


# --- judging with the band ----------------------------------------------------------------


def shifted_binary(seed: int, rows: int, spread: float) -> tuple[pd.DataFrame, pd.Series,
                                                                 pd.Series]:
    """A calibrated model P(y=1|x) = sigmoid(2x); a smaller ``spread`` of x is covariate
    shift that costs accuracy."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-2 * rng.normal(0, spread, rows)))
    y = (rng.uniform(size=rows) < p).astype(int)
    return pd.DataFrame({"0": 1 - p, "1": p}), pd.Series(y), pd.Series((p >= 0.5).astype(int))


@pytest.fixture(scope="module")
def binary_estimator() -> AccuracyEstimator:
    proba, y, pred = shifted_binary(0, 20_000, 1.5)
    return AccuracyEstimator.fit(proba, y, pred, make_schema([0, 1]))


def test_a_small_window_does_not_warn_on_noise(binary_estimator: AccuracyEstimator) -> None:
    proba, _, pred = shifted_binary(1, 40, 0.6)
    res = check_estimated(binary_estimator, proba, pred, realized_accuracy=None,
                          config=PerformanceConfig())
    assert res.drop is not None and res.drop > 0.05  # past the allowance, ...
    assert res.lower_bound is not None and res.upper_bound is not None
    assert res.lower_bound < binary_estimator.reference_accuracy < res.upper_bound  # noise
    assert res.status == "ok"
    assert "within sampling error" in res.reasons[0] and "40 rows" in res.reasons[0]
    # The band's width: 3 sampling errors each side, the error the reference's spread of
    # per-row correctness over sqrt(rows).
    spread = np.sqrt(binary_estimator.reference_accuracy
                     * (1 - binary_estimator.reference_accuracy))
    assert res.sampling_error == pytest.approx(spread / np.sqrt(40))
    assert res.upper_bound - res.estimated_accuracy == pytest.approx(3 * res.sampling_error)
    # Judged on the drop alone, the same window warns.
    alone = check_estimated(binary_estimator, proba, pred, realized_accuracy=None,
                            config=PerformanceConfig(estimated_band=False))
    assert alone.status == "warn" and alone.reasons[0].endswith("> allowed 0.050")


def test_a_large_window_with_the_same_shift_warns(binary_estimator: AccuracyEstimator) -> None:
    proba, _, pred = shifted_binary(2, 5000, 0.6)
    res = check_estimated(binary_estimator, proba, pred, realized_accuracy=None,
                          config=PerformanceConfig())
    assert res.status == "warn" and res.upper_bound is not None
    assert res.upper_bound < binary_estimator.reference_accuracy
    assert "the reference lies above the 3-sigma band" in res.reasons[0]


# --- the section's document ---------------------------------------------------------------


def test_the_section_round_trips_and_old_documents_read_back() -> None:
    reference, window, classes = reference_and_window("wine", "forest", True)
    _, result = mqm_estimate(reference, window, classes)
    document = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert from_json(EstimatedResult, document) == result
    assert set(document["metrics"]) == {"accuracy", "f1", "precision", "recall", "roc_auc"}
    old = {k: document[k] for k in ("estimated_accuracy", "reference_accuracy", "drop",
                                     "realized_accuracy", "rows_used", "status", "reasons")}
    back = from_json(EstimatedResult, old)
    assert (back.sampling_error, back.lower_bound, back.metrics, back.calibrated) == (
        None, None, {}, ())


def test_always_calibrate_is_an_option_not_the_default() -> None:
    from sklearn.isotonic import IsotonicRegression

    reference, window, classes = reference_and_window("breast_cancer", "forest", True)
    proba = {str(c): reference[f"p_{c}"] for c in classes}
    nannyml_rule, _ = mqm_estimate(reference, window, classes)
    always = AccuracyEstimator.fit(pd.DataFrame(proba), reference["y"], reference["pred"],
                                   make_schema(classes), calibration="always")
    assert nannyml_rule.calibrated_classes == () and always.calibrated_classes == ("1",)
    assert always.calibration_notes["1"].startswith(
        "calibrated (estimated_calibration: always) where NannyML's rule would not: not "
        "calibrated: expected calibration error")
    # Independently: isotonic regression of the positive class, the predicted class's share.
    iso = IsotonicRegression(out_of_bounds="clip").fit(reference["p_1"], reference["y"])
    q = iso.predict(window["p_1"])
    want = float(np.mean(np.where(window["pred"] == 1, q, 1 - q)))
    window_proba = pd.DataFrame({str(c): window[f"p_{c}"] for c in classes})
    assert always.estimate(window_proba, window["pred"]) == pytest.approx(want, abs=TOLERANCE)
    assert abs(want - nannyml_rule.estimate(window_proba, window["pred"])) > 0.01
