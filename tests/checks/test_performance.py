"""Accuracy decay: metrics equal scikit-learn's and Evidently's; maturity and status rules."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitor.checks.classes import ClassRows
from monitor.checks.performance import (
    _f1,
    check_performance,
    performance_metrics,
    positive_rank_sum,
)
from monitor.config import PerformanceConfig
from monitor.schema import FeatureSpec, ModelSchema, PredictionSpec, label_of, label_text

END = datetime(2026, 10, 1, tzinfo=UTC)
FRESH = END + timedelta(hours=1)  # an hour after the window: labels still arriving
OLD = END + timedelta(days=8)  # past the default max_label_delay of 7 days


def make_schema(task: str = "classification", classes: list | None = None) -> ModelSchema:
    labels = [str(c) for c in classes or []]
    return ModelSchema(
        model="m", task=task, features=[FeatureSpec(name="x", type="float")],
        prediction=PredictionSpec(type="float" if task == "regression" else "int",
                                  classes=classes,
                                  probability_columns={c: f"proba_{c}" for c in labels}),
    )


def binary_data(n: int, seed: int = 0, flip: float = 0.1):
    """Labels as float with nulls (int column that held nulls), predictions not just a
    threshold of the probabilities (flip a share), probabilities with a few NaN."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p).astype(int)
    pred = (p >= 0.5).astype(int)
    flipped = rng.uniform(size=n) < flip
    pred[flipped] = 1 - pred[flipped]
    proba = pd.DataFrame({"0": 1 - p, "1": p})
    return pd.Series(pred), pd.Series(y, dtype=float), proba


def multiclass_data(n: int, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    pred = p.argmax(axis=1)
    return pd.Series(pred), pd.Series(y), pd.DataFrame(p, columns=[str(c) for c in range(k)])


# --- label normalisation ------------------------------------------------------------

def test_label_text_reads_integral_floats_as_ints_and_bools_as_words() -> None:
    assert label_text(pd.Series([1.0, None, 2.0])).tolist() == ["1", None, "2"]
    assert label_text(pd.Series([1.5, np.nan, 1e20])).tolist() == ["1.5", None,
                                                                    "100000000000000000000"]
    assert label_text(pd.Series([True, False])).tolist() == ["True", "False"]
    assert label_text(pd.Series([1, None], dtype="Int64")).tolist() == ["1", None]
    assert label_text(pd.Series([1, 0])).tolist() == ["1", "0"]
    mixed = pd.Series([1, 1.0, True, "a", np.float64(2.0), 2.5, None], dtype=object)
    assert label_text(mixed).tolist() == ["1", "1", "True", "a", "2", "2.5", None]


@pytest.mark.parametrize("ints", [[0, 1, 1, 0], [-5, 6, 0, -5, 3], [7], [-2**63, -2**63 + 4],
                                  [2**63 - 1, 2**63 - 3], [0, 70_000, 5], [-2**63, 2**63 - 1]])
def test_label_text_of_int_columns_equals_each_value_as_text(ints: list[int]) -> None:
    # Short ranges take the offset path, wide ones factorize: the same texts either way.
    rng = np.random.default_rng(len(ints))
    values = pd.Series(rng.choice(np.array(ints, dtype=np.int64), 500))
    assert label_text(values).tolist() == [label_of(int(v)) for v in values]
    assert label_text(values).dtype == object
    # The same as Python ints among nulls (labels as read from JSON).
    objects = pd.Series([int(v) if i % 3 else None for i, v in enumerate(values)],
                        dtype=object)
    assert label_text(objects).tolist() == [None if v is None else label_of(v)
                                            for v in objects]


def test_label_text_of_python_ints_beyond_64_bits_is_their_text() -> None:
    values = pd.Series([2**70, None, -2**70, 1], dtype=object)
    assert label_text(values).tolist() == [str(2**70), None, str(-2**70), "1"]


# --- metrics against scikit-learn ----------------------------------------------------

def test_binary_metrics_equal_sklearn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    pred, y, proba = binary_data(5000)
    y[::7] = np.nan  # labels not arrived
    got = performance_metrics(pred, y, proba, make_schema(classes=[0, 1]))
    has = y.notna()
    yt, yp = y[has].astype(int), pred[has]
    assert got["accuracy"] == pytest.approx(accuracy_score(yt, yp), abs=1e-9)
    assert got["f1"] == pytest.approx(f1_score(yt, yp, pos_label=1), abs=1e-9)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(yt, proba["1"][has]), abs=1e-9)


def test_binary_positive_class_is_the_last_class_of_the_contract() -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    pred, y, proba = binary_data(2000, seed=1)
    words = {0: "yes", 1: "no"}
    pred_w, y_w = pred.map(words), y.astype(int).map(words)
    proba_w = proba.rename(columns={"0": "yes", "1": "no"})
    got = performance_metrics(pred_w, y_w, proba_w, make_schema(classes=["yes", "no"]))
    assert got["f1"] == pytest.approx(f1_score(y_w, pred_w, pos_label="no"), abs=1e-9)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y_w == "no", proba_w["no"]), abs=1e-9)


def test_roc_auc_handles_ties_like_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    pred, y, proba = binary_data(3000, seed=2)
    rounded = proba.round(1)  # many tied scores
    got = performance_metrics(pred, y, rounded, make_schema(classes=[0, 1]))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, rounded["1"]), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_the_positives_rank_sum_is_scipy_rankdatas_bit_for_bit(seed: int) -> None:
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    # Tied scores in runs of every length, and distinct ones, in random order; ties
    # first and last too.
    scores = np.concatenate([rng.integers(0, 50, 3000) / 7, rng.random(2000), [-1.0] * 3,
                             [9.0] * 4])
    rng.shuffle(scores)
    for share in (0.0, 0.01, 0.5, 1.0):
        positive = rng.random(len(scores)) < share
        want = float(rankdata(scores, method="average")[positive].sum())
        assert positive_rank_sum(positive, scores) == want
    assert positive_rank_sum(np.zeros(0, dtype=bool), np.zeros(0)) == 0.0
    assert positive_rank_sum(np.array([True]), np.array([0.3])) == 1.0


def test_f1_counts_each_outcome_as_the_pairwise_comparisons() -> None:
    rng = np.random.default_rng(3)
    values = np.array(["a", "b", "c", None, math.nan], dtype=object)
    pred, label = values[rng.integers(0, 5, 4000)], values[rng.integers(0, 5, 4000)]
    rows = ClassRows.of(pd.Series(pred, dtype=object), pd.Series(label, dtype=object))
    for cls in ("a", "b", "z"):
        tp = int(np.sum((pred == cls) & (label == cls)))
        fp = int(np.sum((pred == cls) & (label != cls)))
        fn = int(np.sum((pred != cls) & (label == cls)))
        want = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
        assert _f1(rows, rows.code(cls)) == want


def test_multiclass_metrics_equal_sklearn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    pred, y, proba = multiclass_data(4000, k=4)
    got = performance_metrics(pred, y, proba, make_schema(classes=[0, 1, 2, 3]))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)
    assert got["f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-9)
    assert got["roc_auc"] == pytest.approx(
        roc_auc_score(y, proba.to_numpy(), multi_class="ovr", average="macro"), abs=1e-9)


def test_multiclass_roc_auc_needs_every_class_column() -> None:
    pred, y, proba = multiclass_data(500)
    got = performance_metrics(pred, y, proba.drop(columns="2"), make_schema(classes=[0, 1, 2]))
    assert got["roc_auc"] is None
    assert got["accuracy"] is not None


def test_unknown_label_is_just_a_wrong_prediction() -> None:
    from sklearn.metrics import f1_score

    pred = pd.Series(["1", "1", "1", "0", "0"])
    y = pd.Series(["1", "0", "7", "1", "0"])
    got = performance_metrics(pred, y, None, make_schema(classes=[0, 1]))
    assert got["accuracy"] == pytest.approx(2 / 5)
    assert got["f1"] == pytest.approx(f1_score(y, pred, labels=["1"], average="macro"))
    assert got["roc_auc"] is None  # no probabilities
    pred3 = pd.Series(["a", "b", "a", "c"])
    y3 = pd.Series(["a", "b", "c", "z"])
    got3 = performance_metrics(pred3, y3, None, make_schema(classes=["a", "b", "c"]))
    assert got3["f1"] == pytest.approx(
        f1_score(y3, pred3, labels=["a", "b", "c"], average="macro"))


def test_regression_metrics_equal_sklearn() -> None:
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    rng = np.random.default_rng(3)
    y = pd.Series(rng.integers(0, 100, size=3000))  # int labels on a regression task
    pred = pd.Series(y + rng.normal(0, 5, size=3000))
    got = performance_metrics(pred, y, None, make_schema("regression"))
    assert got["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-9)
    assert got["rmse"] == pytest.approx(root_mean_squared_error(y, pred), abs=1e-9)


# --- metrics against Evidently 0.7 ---------------------------------------------------

def _evidently_values(frame: pd.DataFrame, task: object, preset: object) -> dict[str, object]:
    from evidently import DataDefinition, Dataset, Regression, Report

    key = "regression" if isinstance(task, Regression) else "classification"
    definition = DataDefinition(numerical_columns=[], categorical_columns=[], **{key: [task]})
    snap = Report([preset]).run(Dataset.from_pandas(frame, data_definition=definition), None)
    return {m["metric_name"].split("(")[0]: m["value"] for m in snap.dict()["metrics"]}


@pytest.mark.slow
def test_binary_metrics_equal_evidently() -> None:
    from evidently import BinaryClassification
    from evidently.presets import ClassificationPreset

    pred, y, proba = binary_data(3000, seed=4, flip=0.0)
    frame = pd.DataFrame({"target": y.astype(int), "prediction": pred, "proba": proba["1"]})
    # With a probability column Evidently predicts by thresholding it at 0.5, as here.
    with_proba = _evidently_values(frame, BinaryClassification(
        target="target", prediction_labels="prediction", prediction_probas="proba",
        pos_label=1), ClassificationPreset())
    got = performance_metrics(pred, y, proba, make_schema(classes=[0, 1]))
    assert got["accuracy"] == pytest.approx(with_proba["Accuracy"], abs=1e-9)
    assert got["f1"] == pytest.approx(with_proba["F1Score"], abs=1e-9)
    assert got["roc_auc"] == pytest.approx(with_proba["RocAuc"], abs=1e-9)
    # Labels only: predictions that are not a threshold of the probabilities.
    pred, y, proba = binary_data(3000, seed=5, flip=0.2)
    frame = pd.DataFrame({"target": y.astype(int), "prediction": pred})
    labels_only = _evidently_values(frame, BinaryClassification(
        target="target", prediction_labels="prediction", pos_label=1), ClassificationPreset())
    got = performance_metrics(pred, y, None, make_schema(classes=[0, 1]))
    assert got["accuracy"] == pytest.approx(labels_only["Accuracy"], abs=1e-9)
    assert got["f1"] == pytest.approx(labels_only["F1Score"], abs=1e-9)


@pytest.mark.slow
def test_multiclass_metrics_equal_evidently() -> None:
    from evidently import MulticlassClassification
    from evidently.presets import ClassificationPreset

    pred, y, proba = multiclass_data(2000, k=3, seed=6)
    # Labels as text, like the probability columns: Evidently's ROC-curve widget compares
    # an int target with the column names and warns that no class has positives.
    frame = pd.concat([pd.DataFrame({"target": y.astype(str), "prediction": pred.astype(str)}),
                       proba], axis=1)
    ev = _evidently_values(frame, MulticlassClassification(
        target="target", prediction_labels="prediction", prediction_probas=["0", "1", "2"]),
        ClassificationPreset())
    got = performance_metrics(pred, y, proba, make_schema(classes=[0, 1, 2]))
    assert got["accuracy"] == pytest.approx(ev["Accuracy"], abs=1e-9)
    assert got["f1"] == pytest.approx(ev["F1Score"], abs=1e-9)
    assert got["roc_auc"] == pytest.approx(ev["RocAuc"], abs=1e-9)


@pytest.mark.slow
def test_regression_metrics_equal_evidently() -> None:
    from evidently import Regression
    from evidently.presets import RegressionPreset

    rng = np.random.default_rng(7)
    y = pd.Series(rng.normal(50, 10, size=2000))
    pred = pd.Series(y + rng.normal(0, 3, size=2000))
    frame = pd.DataFrame({"target": y, "prediction": pred})
    ev = _evidently_values(frame, Regression(target="target", prediction="prediction"),
                           RegressionPreset())
    got = performance_metrics(pred, y, None, make_schema("regression"))
    assert got["mae"] == pytest.approx(ev["MAE"]["mean"], abs=1e-9)
    assert got["rmse"] == pytest.approx(ev["RMSE"], abs=1e-9)


# --- check_performance: maturity and status ------------------------------------------

CONFIG = PerformanceConfig()
SCHEMA = make_schema(classes=[0, 1])


def reference_of(pred: pd.Series, y: pd.Series, proba: pd.DataFrame) -> dict[str, float | None]:
    return performance_metrics(pred, y, proba, SCHEMA)


def test_healthy_mature_window_is_ok() -> None:
    pred, y, proba = binary_data(2000)
    ref = reference_of(*binary_data(2000, seed=9))
    res = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=FRESH)
    assert (res.status, res.mature, res.rows, res.labelled_rows) == ("ok", True, 2000, 2000)
    assert res.label_coverage == 1.0
    assert res.drops["accuracy"] == pytest.approx(ref["accuracy"] - res.metrics["accuracy"])
    assert res.reasons == ()
    json.dumps(res.as_dict())


def test_decayed_window_is_critical_with_one_reason_per_metric() -> None:
    ref = reference_of(*binary_data(2000, seed=9))
    pred, y, proba = binary_data(2000, flip=0.4)  # many more wrong predictions
    res = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=FRESH)
    assert res.status == "critical"
    exceeded = [r.split(" ")[0] for r in res.reasons]
    assert exceeded == ["accuracy", "f1"]  # roc_auc uses the same probabilities: no drop
    acc, ref_acc = res.metrics["accuracy"], ref["accuracy"]
    assert res.reasons[0] == (f"accuracy {acc:.3f} vs reference {ref_acc:.3f}: "
                              f"drop {ref_acc - acc:.3f} > allowed 0.050")


def test_metrics_absent_from_allowed_drop_are_not_judged() -> None:
    ref = reference_of(*binary_data(2000, seed=9))
    pred, y, proba = binary_data(2000, flip=0.4)
    config = PerformanceConfig(allowed_drop={"roc_auc": 0.05})
    res = check_performance(pred, y, proba, ref, SCHEMA, config=config, window_end=END, now=FRESH)
    assert res.status == "ok"
    assert res.drops["accuracy"] > 0.05  # measured, shown, not judged


def test_allowed_drop_is_the_limit_itself() -> None:
    pred, y, proba = binary_data(1000)
    cur = reference_of(pred, y, proba)
    ref = {**cur, "accuracy": cur["accuracy"] + 0.05}  # exactly the allowance (0.05)
    res = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=FRESH)
    assert res.status == "ok"
    tighter = PerformanceConfig(allowed_drop={"accuracy": 0.049})
    res = check_performance(pred, y, proba, ref, SCHEMA, config=tighter, window_end=END, now=FRESH)
    assert res.status == "critical"


def test_low_coverage_fresh_window_is_skipped_but_shows_metrics() -> None:
    pred, y, proba = binary_data(2000, flip=0.4)
    y[500:] = np.nan  # 25% labelled
    ref = reference_of(*binary_data(2000, seed=9))
    res = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=FRESH)
    assert (res.status, res.mature, res.labelled_rows) == ("skipped", False, 500)
    assert res.label_coverage == 0.25
    assert res.reasons == ("not mature: label coverage 25.0% < 80.0% and window ended 1.0h ago "
                           "< max label delay 7.0d",)
    assert res.metrics["accuracy"] == pytest.approx(
        reference_of(pred[:500], y[:500], proba[:500])["accuracy"])
    # The same window past max_label_delay is judged on the labels there are.
    old = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=OLD)
    assert (old.status, old.mature) == ("critical", True)
    # And a lower min_label_coverage makes it mature at once.
    low = PerformanceConfig(min_label_coverage=0.2)
    res = check_performance(pred, y, proba, ref, SCHEMA, config=low, window_end=END, now=FRESH)
    assert (res.status, res.mature) == ("critical", True)


def test_a_window_exactly_max_label_delay_old_is_mature() -> None:
    pred, y, proba = binary_data(2000, flip=0.4)
    y[500:] = np.nan  # 25% labelled: only its age can make it mature
    ref = reference_of(*binary_data(2000, seed=9))
    delay = CONFIG.max_label_delay
    at_delay = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END,
                                 now=END + delay)
    assert at_delay.mature and at_delay.status == "critical"
    just_before = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END,
                                    now=END + delay - timedelta(microseconds=1))
    assert not just_before.mature and just_before.status == "skipped"


def test_too_few_labelled_rows_is_skipped() -> None:
    pred, y, proba = binary_data(50)
    ref = reference_of(pred, y, proba)
    res = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=OLD)
    assert (res.status, res.mature) == ("skipped", True)
    assert res.reasons == ("50 labelled rows < 100 needed (label coverage 100.0%)",)
    few = PerformanceConfig(min_labelled_rows=50)
    res = check_performance(pred, y, proba, ref, SCHEMA, config=few, window_end=END, now=OLD)
    assert res.status == "ok"


def test_window_without_any_label() -> None:
    pred, _, proba = binary_data(300)
    y = pd.Series([None] * 300, dtype=object)
    ref = reference_of(*binary_data(300, seed=9))
    res = check_performance(pred, y, proba, ref, SCHEMA, config=CONFIG, window_end=END, now=OLD)
    assert (res.status, res.labelled_rows, res.label_coverage) == ("skipped", 0, 0.0)
    assert res.metrics == {"accuracy": None, "f1": None, "roc_auc": None}
    assert set(res.drops.values()) == {None}


def test_empty_window() -> None:
    empty = pd.Series([], dtype=float)
    res = check_performance(empty, empty, None, {}, SCHEMA, config=CONFIG, window_end=END,
                            now=FRESH)
    assert (res.status, res.rows, res.label_coverage) == ("skipped", 0, 0.0)


def test_rows_without_prediction_are_not_counted() -> None:
    pred, y, proba = binary_data(400)
    pred = pred.astype(float)
    pred[:100] = np.nan
    res = check_performance(pred, y, proba, {}, SCHEMA, config=CONFIG, window_end=END, now=OLD)
    assert (res.rows, res.labelled_rows) == (300, 300)


def test_no_reference_metrics_means_nothing_judged() -> None:
    pred, y, proba = binary_data(400)
    res = check_performance(pred, y, proba, {}, SCHEMA, config=CONFIG, window_end=END, now=OLD)
    assert res.status == "skipped"
    assert res.reasons == ("none of accuracy, f1, roc_auc could be compared with the reference "
                           "(undefined on one side)",)
    config = PerformanceConfig(allowed_drop={"mae": 0.1})  # no classification metric
    ref = reference_of(pred, y, proba)
    res = check_performance(pred, y, proba, ref, SCHEMA, config=config, window_end=END, now=OLD)
    assert res.status == "skipped" and "nothing to judge" in res.reasons[0]


def test_without_probabilities_roc_auc_is_not_judged() -> None:
    ref = reference_of(*binary_data(2000, seed=9))
    pred, y, _ = binary_data(2000)
    res = check_performance(pred, y, None, ref, SCHEMA, config=CONFIG, window_end=END, now=OLD)
    assert res.metrics["roc_auc"] is None and res.drops["roc_auc"] is None
    assert res.status == "ok"


def test_regression_drop_is_relative() -> None:
    rng = np.random.default_rng(8)
    y = pd.Series(rng.normal(100, 20, size=1000))
    noise = pd.Series(rng.normal(0, 1, size=1000))
    schema = make_schema("regression")
    ref = performance_metrics(y + 5 * noise, y, None, schema)
    res = check_performance(y + 6 * noise, y, None, ref, schema, config=CONFIG, window_end=END,
                            now=OLD)
    assert res.drops["mae"] == pytest.approx(0.2)  # errors 6/5 of the reference's
    assert res.drops["rmse"] == pytest.approx(0.2)
    assert res.status == "critical"
    assert res.reasons[0].startswith("mae ") and "worse by 20.0% > allowed 10.0%" in res.reasons[0]
    assert set(res.metrics) == {"mae", "rmse"}
    res = check_performance(y + 5.2 * noise, y, None, ref, schema, config=CONFIG,
                            window_end=END, now=OLD)
    assert res.status == "ok"


def test_regression_against_a_perfect_reference() -> None:
    y = pd.Series(np.arange(200.0))
    schema = make_schema("regression")
    ref = performance_metrics(y, y, None, schema)
    res = check_performance(y + 1, y, None, ref, schema, config=CONFIG, window_end=END, now=OLD)
    assert res.drops["mae"] == math.inf and res.status == "critical"


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        performance_metrics(pd.Series([1, 0]), pd.Series([1]), None, SCHEMA)
