"""Classifier metrics expected from calibrated probabilities, without labels (CBPE).

Given, per row, the calibrated probability of each class and the predicted class, the
expected confusion counts are sums of probabilities: a row predicted positive adds its
probability of being positive to TP and the rest to FP; a row predicted otherwise adds its
probability of being positive to FN. Accuracy, precision, recall and F1 follow from the
expected counts; ROC AUC from the curve they trace when rows are ranked by the model's raw
score. As NannyML's CBPE 0.13.1 (``confidence_based/metrics.py``): binary metrics are of
the positive class, multiclass ones the unweighted mean over the classes (one vs rest);
an empty denominator gives 0, as there. Pure numpy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ESTIMATED_METRICS", "estimated_metrics", "expected_accuracy"]

ESTIMATED_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc")


def _counts(proba: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """Expected TP, FP, FN of one class: its probability per row, and whether predicted."""
    chosen = proba[predicted]
    tp = float(np.sum(chosen))
    fp = float(np.sum(1.0 - chosen))
    fn = float(np.sum(proba[~predicted]))
    return tp, fp, fn


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0 else 0.0


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """numpy's ``trapezoid`` (2.0+), whose halving is exact, so the same number. Uses
    ``y`` up: the widths are written over it once the heights are taken."""
    heights = y[1:] + y[:-1]
    widths = np.subtract(x[1:], x[:-1], out=y[:-1])
    heights *= widths
    return float(np.sum(heights) / 2.0)


def _estimated_auc(proba: np.ndarray, raw: np.ndarray) -> float:
    """Expected ROC AUC of one class: rows ranked by the raw score (highest first), the
    calibrated probability counted as the expected positive. Cumulative counts are rounded
    to 5 decimals, as NannyML; NaN when one outcome is expected nowhere."""
    order = np.argsort(raw)[::-1]  # numpy's default sort, as NannyML: the same tie order
    rows = len(order)
    tps = np.zeros(rows + 1)  # expected true positives among the first k rows, k = 0..n
    np.take(proba, order, out=tps[1:])
    del order  # each of these arrays is 8 MB per million rows: one less held at a time
    np.cumsum(tps[1:], out=tps[1:])
    fps = np.arange(rows + 1, dtype=float)
    fps -= tps
    np.round(tps, 5, out=tps)
    np.round(fps, 5, out=fps)
    if tps[-1] == 0 or fps[-1] == 0:
        return math.nan
    tps /= tps[-1]
    fps /= fps[-1]
    return _trapezoid(tps, fps)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def expected_accuracy(calibrated: np.ndarray, predicted: np.ndarray) -> float:
    """``estimated_metrics``' accuracy alone (the mean chance each prediction is right),
    for a caller that reads no other metric: a version's figures (its ROC AUC's sort was
    most of the cost). Rows as there; at least one."""
    rows, width = calibrated.shape
    if width == 1:
        positive = calibrated[:, 0]
        # The chance each prediction is right, built in one array (three nested
        # ``where``s held three million-row arrays at once).
        correct = np.subtract(1.0, positive)
        np.copyto(correct, positive, where=predicted == 1)
        correct[(predicted != 0) & (predicted != 1)] = 0.0
    else:
        known = predicted >= 0
        correct = np.where(known, calibrated[np.arange(rows), np.where(known, predicted, 0)],
                           0.0)
    return float(np.mean(correct))


def estimated_metrics(calibrated: np.ndarray, raw: np.ndarray,
                      predicted: np.ndarray) -> dict[str, float | None]:
    """Expected accuracy, F1, precision, recall and ROC AUC of a window.

    ``calibrated``: rows x classes, the calibrated probabilities (each row sums to 1);
    ``raw``: rows x classes, the model's own scores (they rank rows for ROC AUC);
    ``predicted``: per row the column of the predicted class, -1 for a prediction outside
    the classes (never right, and predicted as no class). Binary: either two columns, the
    second the positive class, or the positive class's column alone in both (the negative
    one is 1 minus it; a million rows' two-column copies are 32 MB). None where a metric
    is undefined (no rows; ROC AUC with one outcome expected nowhere).
    """
    rows, width = calibrated.shape
    if not rows:
        return dict.fromkeys(ESTIMATED_METRICS)
    accuracy = expected_accuracy(calibrated, predicted)
    if width == 1:  # binary, the positive column: the numbers a second column would give
        scored = [(1, calibrated[:, 0], raw[:, 0])]
    else:
        scored = [(c, calibrated[:, c], raw[:, c])
                  for c in ([1] if width == 2 else range(width))]
    f1s, precisions, recalls, aucs = [], [], [], []
    for c, proba, score in scored:
        tp, fp, fn = _counts(proba, predicted == c)
        f1s.append(_ratio(tp, tp + 0.5 * (fp + fn)))
        precisions.append(_ratio(tp, tp + fp))
        recalls.append(_ratio(tp, tp + fn))
        aucs.append(_estimated_auc(proba, score))
    return {
        "accuracy": accuracy,
        "f1": float(np.mean(f1s)),
        "precision": float(np.mean(precisions)),
        "recall": float(np.mean(recalls)),
        "roc_auc": _finite(float(np.mean(aucs))),
    }
