"""NannyML 0.13.1's CBPE, ported for the tests: the independent computation mqm's estimate
is held equal to.

NannyML itself cannot be a test dependency: it pins python-dateutil<3, below our lock.
So its code paths are copied here, step for step and with the same library calls
(pandas frames, scikit-learn's ``label_binarize``, ``LabelBinarizer``, ``roc_auc_score``,
``auc``, ``StratifiedShuffleSplit``, ``IsotonicRegression``), not mqm's closed forms:

- ``nannyml/calibration.py``: ``needs_calibration``, ``_get_bin_index_edges``,
  ``_calculate_expected_calibration_error``;
- ``nannyml/performance_estimation/confidence_based/cbpe.py``: ``_fit_binary``,
  ``_fit_calibrators``, ``_calibrate_predicted_probabilities``;
- ``.../confidence_based/metrics.py``: ``estimate_accuracy``, ``estimate_f1``,
  ``estimate_precision``, ``estimate_recall``, ``estimate_roc_auc`` and the multiclass
  metrics' ``_estimate``;
- ``nannyml/sampling_error/binary_classification.py`` and ``multiclass_classification.py``.

bench/estimate_vs_nannyml.py checks this port against NannyML itself where it is
installed. NannyML is Apache-2.0 licensed, (c) its authors (Niels Nuyttens, Jakub Bialek).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import auc, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import LabelBinarizer, label_binarize

METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc")
SAMPLING_ERROR_RANGE = 3


# --- nannyml/calibration.py -------------------------------------------------------------


class Isotonic:
    def __init__(self) -> None:
        self._regressor = IsotonicRegression(out_of_bounds="clip", increasing=True)

    def fit(self, y_pred_proba, y_true) -> None:
        self._regressor.fit(y_pred_proba, y_true)

    def calibrate(self, y_pred_proba):
        return self._regressor.predict(y_pred_proba)


class Noop:
    def fit(self, y_pred_proba, y_true) -> None:
        pass

    def calibrate(self, y_pred_proba):
        return np.asarray(y_pred_proba)


def _get_bin_index_edges(vector_length: int, bin_count: int) -> list[tuple[int, int]]:
    if vector_length <= 2 * bin_count:
        bin_count = vector_length // 2
        if bin_count < 2:
            raise ValueError("cannot split into minimum of 2 bins")
    bin_width = vector_length // bin_count
    bin_edges = np.asarray(range(0, vector_length + 1, bin_width))
    bin_edges[-1] = vector_length
    return list(itertools.pairwise(bin_edges))


def _calculate_expected_calibration_error(y_true, y_pred_proba, bin_index_edges) -> float:
    terms = []
    y_pred_proba, y_true = np.asarray(y_pred_proba), np.asarray(y_true)
    sort_index = y_pred_proba.argsort()
    y_pred_proba = y_pred_proba[sort_index]
    y_true = y_true[sort_index]
    for left_edge, right_edge in bin_index_edges:
        bin_proba = y_pred_proba[left_edge:right_edge]
        bin_true = y_true[left_edge:right_edge]
        weight = len(bin_proba) / len(y_pred_proba)
        terms.append(weight * abs(np.mean(bin_proba) - np.mean(bin_true)))
    return float(np.sum(terms))


def needs_calibration(y_true, y_pred_proba, calibrator, bin_count: int = 10,
                      split_count: int = 10) -> bool:
    if len(np.unique(y_true)) == 1:
        return False
    if roc_auc_score(y_true, y_pred_proba, multi_class="ovr") > 0.999:
        return False
    sss = StratifiedShuffleSplit(n_splits=split_count, test_size=0.1, random_state=42)
    list_y_true_test, list_y_pred_proba_test, list_calibrated_test = [], [], []
    for train, test in sss.split(y_pred_proba, y_true):
        y_pred_proba_train, y_true_train = y_pred_proba[train], y_true[train]
        y_pred_proba_test, y_true_test = y_pred_proba[test], y_true[test]
        calibrator.fit(y_pred_proba_train, y_true_train)
        list_y_true_test.append(y_true_test)
        list_y_pred_proba_test.append(y_pred_proba_test)
        list_calibrated_test.append(calibrator.calibrate(y_pred_proba_test))
    vec_y_true_test = np.concatenate(list_y_true_test)
    vec_y_pred_proba_test = np.concatenate(list_y_pred_proba_test)
    vec_calibrated_test = np.concatenate(list_calibrated_test)
    edges = _get_bin_index_edges(len(vec_y_pred_proba_test), bin_count)
    before = _calculate_expected_calibration_error(vec_y_true_test, vec_y_pred_proba_test, edges)
    after = _calculate_expected_calibration_error(vec_y_true_test, vec_calibrated_test, edges)
    return before > after


# --- confidence_based/metrics.py: the estimates -------------------------------------------


def estimate_accuracy(y_pred, y_pred_proba) -> float:
    y_pred, y_pred_proba = np.asarray(y_pred), np.asarray(y_pred_proba)
    tp = np.where(y_pred == 1, y_pred_proba, 0)
    tn = np.where(y_pred == 0, 1 - y_pred_proba, 0)
    return (np.sum(tp) + np.sum(tn)) / len(y_pred)


def estimate_f1(y_pred, y_pred_proba) -> float:
    y_pred, y_pred_proba = np.asarray(y_pred), np.asarray(y_pred_proba)
    tp = np.sum(np.where(y_pred == 1, y_pred_proba, 0))
    fp = np.sum(np.where(y_pred == 1, 1 - y_pred_proba, 0))
    fn = np.sum(np.where(y_pred == 0, y_pred_proba, 0))
    denominator = tp + 0.5 * (fp + fn)
    return tp / denominator if denominator != 0 else 0


def estimate_precision(y_pred, y_pred_proba) -> float:
    y_pred, y_pred_proba = np.asarray(y_pred), np.asarray(y_pred_proba)
    tp = np.sum(np.where(y_pred == 1, y_pred_proba, 0))
    fp = np.sum(np.where(y_pred == 1, 1 - y_pred_proba, 0))
    return tp / (tp + fp) if tp + fp != 0 else 0


def estimate_recall(y_pred, y_pred_proba) -> float:
    y_pred, y_pred_proba = np.asarray(y_pred), np.asarray(y_pred_proba)
    tp = np.sum(np.where(y_pred == 1, y_pred_proba, 0))
    fn = np.sum(np.where(y_pred == 0, y_pred_proba, 0))
    return tp / (tp + fn) if tp + fn != 0 else 0


def estimate_roc_auc(true_y_pred_proba, model_y_pred_proba) -> float:
    true_y_pred_proba = np.asarray(true_y_pred_proba)
    model_y_pred_proba = np.asarray(model_y_pred_proba)
    sorted_index = np.argsort(model_y_pred_proba)[::-1]
    true_y_pred_proba = true_y_pred_proba[sorted_index]
    with np.errstate(divide="ignore", invalid="ignore"):
        tps = np.cumsum(true_y_pred_proba)
        fps = 1 + np.arange(len(true_y_pred_proba)) - tps
        tps = np.round(np.r_[0, tps], 5)
        fps = np.round(np.r_[0, fps], 5)
        return float(auc(fps / fps[-1], tps / tps[-1]))


_BINARY_ESTIMATES = {"f1": estimate_f1, "precision": estimate_precision,
                     "recall": estimate_recall}


# --- nannyml/sampling_error -------------------------------------------------------------


def _auroc_components(y_true, y_pred_proba, *, variance: bool) -> tuple[float, float]:
    y_true, y_pred_proba = np.asarray(y_true), np.asarray(y_pred_proba)
    if np.mean(y_true) > 0.5:
        y_true = abs(np.asarray(y_true) - 1)
        y_pred_proba = 1 - y_pred_proba
    sorted_idx = np.argsort(y_pred_proba)
    y_pred_proba = y_pred_proba[sorted_idx]
    y_true = y_true[sorted_idx]
    rank_order = np.asarray(range(len(y_pred_proba)))
    positive_ranks = y_true * rank_order
    indexes = np.unique(positive_ranks)[1:]
    ser = [index - i for i, index in enumerate(indexes)]
    n_pos = np.sum(y_true)
    n_neg = len(y_true) - n_pos
    ser_multi = np.true_divide(ser, n_neg)
    fraction = n_pos / len(y_true)
    return (np.var(ser_multi) if variance else np.std(ser_multi)), fraction


def _f1_components(y_true, y_pred, *, binary: bool) -> tuple[float, float]:
    tp = np.where((y_true == y_pred) & (y_pred == 1), 1, np.nan)
    fp = np.where((y_true != y_pred) & (y_pred == 1), 0, np.nan)
    fn = np.where((y_true != y_pred) & (y_pred == 0), 0, np.nan)
    tp, fn, fp = tp[~np.isnan(tp)], fn[~np.isnan(fn)], fp[~np.isnan(fp)]
    obs = np.concatenate([tp, fn, fp])
    fraction = len(obs) / len(y_pred)
    if binary:
        correcting_factor = len(obs) / ((len(fn) + len(fp)) * 0.5 + len(tp))
        return np.std(obs * correcting_factor), fraction
    return np.var(obs), fraction


def _precision_components(y_true, y_pred, *, binary: bool) -> tuple[float, float]:
    tp = np.where((y_true == y_pred) & (y_pred == 1), 1, np.nan)
    fp = np.where((y_true != y_pred) & (y_pred == 1), 0, np.nan)
    obs = np.concatenate([tp[~np.isnan(tp)], fp[~np.isnan(fp)]])
    fraction = np.sum(y_pred) / len(y_pred)
    return (np.std(obs) if binary else np.var(obs)), fraction


def _recall_components(y_true, y_pred, *, binary: bool) -> tuple[float, float]:
    tp = np.where((y_true == y_pred) & (y_pred == 1), 1, np.nan)
    fn = np.where((y_true != y_pred) & (y_pred == 0), 0, np.nan)
    obs = np.concatenate([tp[~np.isnan(tp)], fn[~np.isnan(fn)]])
    fraction = sum(y_true) / len(y_pred)
    return (np.std(obs) if binary else np.var(obs)), fraction


_COMPONENTS = {"f1": _f1_components, "precision": _precision_components,
               "recall": _recall_components}


def _binary_sampling_error(components: tuple[float, float], n: int) -> float:
    std, fraction = components
    return std / np.sqrt(n * fraction)


def _multiclass_sampling_error(components: list[tuple[float, float]], n: int,
                               factor: float = 1.0) -> float:
    class_variances = [c[0] / (n * c[1]) for c in components]
    return np.sqrt(np.sum(class_variances)) / len(class_variances) * factor


# --- cbpe.py: fit and estimate ------------------------------------------------------------


def _record(value: float, error: float) -> dict[str, float]:
    return {"value": float(value), "sampling_error": float(error),
            "lower": float(np.maximum(0, value - SAMPLING_ERROR_RANGE * error)),
            "upper": float(np.minimum(1, value + SAMPLING_ERROR_RANGE * error))}


def cbpe(reference: pd.DataFrame, analysis: pd.DataFrame, proba: dict[Any, str], *,
         y_true: str = "y", y_pred: str = "pred") -> dict[str, Any]:
    """CBPE fitted on ``reference`` and run on ``analysis`` as one chunk. ``proba``: class
    -> column; two classes: binary, labels 0 and 1, the column of class 1 is the score.

    Returns ``{"calibrated": {class: bool}, "metrics": {metric: {value, sampling_error,
    lower, upper}}}``.
    """
    reference = reference.reset_index(drop=True)
    analysis = analysis.reset_index(drop=True)
    n = len(analysis)
    if len(proba) == 2:
        return _binary(reference, analysis, proba[1], y_true, y_pred, n)
    return _multiclass(reference, analysis, proba, y_true, y_pred, n)


def _binary(reference, analysis, column, y_true, y_pred, n) -> dict[str, Any]:
    calibrator = Isotonic()
    calibrate = needs_calibration(reference[y_true], reference[column], calibrator)
    if calibrate:
        calibrator.fit(reference[column], reference[y_true])
    raw = analysis[column]
    calibrated = calibrator.calibrate(raw) if calibrate else raw
    ref_true = np.asarray(reference[y_true]).astype(int)
    ref_pred = np.asarray(reference[y_pred]).astype(int)
    pred = analysis[y_pred]
    metrics = {"accuracy": _record(estimate_accuracy(pred, calibrated),
                                   np.std((ref_true == ref_pred).astype(int)) / np.sqrt(n)),
               "roc_auc": _record(estimate_roc_auc(calibrated, raw), _binary_sampling_error(
                   _auroc_components(reference[y_true].to_numpy(),
                                     reference[column].to_numpy(), variance=False), n))}
    for name, estimate in _BINARY_ESTIMATES.items():
        components = _COMPONENTS[name](reference[y_true], reference[y_pred], binary=True)
        metrics[name] = _record(estimate(pred, calibrated),
                                _binary_sampling_error(components, n))
    return {"calibrated": {1: calibrate}, "metrics": metrics}


def _multiclass(reference, analysis, proba, y_true, y_pred, n) -> dict[str, Any]:
    classes = sorted(proba)
    # _fit_calibrators
    binarized_true = label_binarize(reference[y_true], classes=classes).T
    calibrators, calibrated_flags = {}, {}
    for idx, clazz in enumerate(classes):
        outcome, scores = binarized_true[idx], reference[proba[clazz]]
        calibrator: Any = copy.deepcopy(Isotonic())
        if not needs_calibration(np.asarray(outcome), np.asarray(scores), Isotonic()):
            calibrator = Noop()
        calibrator.fit(scores, outcome)
        calibrators[clazz] = calibrator
        calibrated_flags[clazz] = isinstance(calibrator, Isotonic)
    # _calibrate_predicted_probabilities
    calibrated = np.zeros((n, len(classes)))
    for idx, clazz in enumerate(classes):
        calibrated[:, idx] = calibrators[clazz].calibrate(analysis[proba[clazz]])
    denominator = np.sum(calibrated, axis=1)[:, np.newaxis]
    uniform = np.full_like(calibrated, 1 / len(classes))
    calibrated = np.divide(calibrated, denominator, out=uniform, where=denominator != 0)
    # the estimates
    binarized_pred = label_binarize(analysis[y_pred], classes=classes)
    accuracy = np.mean(np.max(binarized_pred * calibrated, axis=1))
    per_class = {name: np.mean([estimate(binarized_pred[:, i], calibrated[:, i])
                                for i in range(len(classes))])
                 for name, estimate in _BINARY_ESTIMATES.items()}
    roc_auc = np.mean([estimate_roc_auc(calibrated[:, i], analysis[proba[c]])
                       for i, c in enumerate(classes)])
    # the sampling errors, fitted on the reference
    binarizer = LabelBinarizer()
    ref_true = binarizer.fit_transform(reference[y_true])
    ref_pred = binarizer.transform(reference[y_pred])
    accuracy_std = np.std((ref_true == ref_pred).all(axis=1).astype(int))
    metrics = {"accuracy": _record(accuracy, accuracy_std / np.sqrt(n))}
    for name, value in per_class.items():
        components = [_COMPONENTS[name](t, p, binary=False)
                      for t, p in zip(ref_true.T, ref_pred.T, strict=True)]
        metrics[name] = _record(value, _multiclass_sampling_error(components, n))
    auc_components = [_auroc_components(binarized_true[i], reference[proba[c]].to_numpy(),
                                        variance=True) for i, c in enumerate(classes)]
    metrics["roc_auc"] = _record(roc_auc, _multiclass_sampling_error(auc_components, n, 1.2))
    return {"calibrated": calibrated_flags, "metrics": metrics}
