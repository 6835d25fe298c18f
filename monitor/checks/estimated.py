"""Estimated accuracy without labels: confidence-based performance estimation (CBPE).

As NannyML's CBPE: calibrate the model's probabilities on the reference set,
where labels are known (isotonic regression, one-vs-rest per class), then the
expected accuracy of a window is the mean calibrated probability of the
predicted class. It holds under covariate shift (P(y|x) unchanged), which is
the drift labels arrive too late to show; it cannot see concept drift.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from monitor.checks.performance import class_names
from monitor.config import PerformanceConfig
from monitor.errors import MonitorError
from monitor.results import EstimatedResult, PerformanceResult
from monitor.schema import ModelSchema, label_text

if TYPE_CHECKING:
    from sklearn.isotonic import IsotonicRegression

__all__ = ["AccuracyEstimator", "EstimatedResult", "check_estimated", "with_estimate"]


def _scores(probabilities: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
    """Rows x scored classes (binary: the positive class only); NaN where missing."""
    proba = probabilities.rename(columns=str)
    n = len(proba)
    if len(classes) == 2:
        positive, negative = classes[1], classes[0]
        if positive in proba.columns:
            col = np.asarray(proba[positive].to_numpy(dtype=float, na_value=np.nan))
            return col.reshape(n, 1)
        if negative in proba.columns:  # a model may log only one column of the pair
            col = np.asarray(proba[negative].to_numpy(dtype=float, na_value=np.nan))
            return 1.0 - col.reshape(n, 1)
        return np.full((n, 1), np.nan)
    cols = [proba[c].to_numpy(dtype=float, na_value=np.nan) if c in proba.columns
            else np.full(n, np.nan) for c in classes]
    return np.column_stack(cols) if cols else np.empty((n, 0))


def _correct(classes: tuple[str, ...], calibrators: tuple[IsotonicRegression, ...],
             scores: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Calibrated probability that each (fully scored) row's prediction is right."""
    calibrated = np.column_stack([iso.predict(scores[:, i]) for i, iso in enumerate(calibrators)])
    if len(classes) == 2:
        calibrated = np.column_stack([1.0 - calibrated[:, 0], calibrated[:, 0]])
    else:
        total = calibrated.sum(axis=1, keepdims=True)
        # Every class calibrated to 0 (scores below all fitted ones): no information left.
        calibrated = np.where(total > 0, calibrated / np.where(total > 0, total, 1.0),
                              1.0 / len(classes))
    column = pd.Categorical(pred, categories=list(classes)).codes.astype(int)  # -1: unknown
    known = column >= 0
    # A prediction outside the classes is never right.
    return np.where(known, calibrated[np.arange(len(pred)), np.where(known, column, 0)], 0.0)


@dataclass(frozen=True)
class AccuracyEstimator:
    """Calibration fitted on the reference set; estimates a window's accuracy."""

    classes: tuple[str, ...]
    calibrators: tuple[IsotonicRegression, ...]  # binary: one, of the positive class
    reference_accuracy: float  # realized on the reference rows used to fit
    reference_estimated: float  # the estimate on those same rows
    reference_rows: int

    @classmethod
    def fit(cls, probabilities: pd.DataFrame, labels: pd.Series, predictions: pd.Series,
            schema: ModelSchema) -> AccuracyEstimator:
        """Fit on the reference rows that have a label, a prediction and probabilities.

        Raises ``MonitorError`` when the schema names fewer than two classes or no
        reference row can be used.
        """
        from sklearn.isotonic import IsotonicRegression

        classes = tuple(class_names(schema))
        if len(classes) < 2:
            raise MonitorError(f"model {schema.model!r}: estimated accuracy needs the classes "
                               "of the prediction in the schema")
        if not len(labels) == len(predictions) == len(probabilities):
            raise ValueError("probabilities, labels and predictions must have the same length")
        scores = _scores(probabilities, classes)
        label = label_text(labels).to_numpy()
        usable = (np.isfinite(scores).all(axis=1) & predictions.notna().to_numpy()
                  & labels.notna().to_numpy())
        if not usable.any():
            raise MonitorError(f"model {schema.model!r}: no reference row has a label, a "
                               "prediction and probabilities to fit the accuracy estimate on")
        scored = classes[1:] if len(classes) == 2 else classes
        calibrators = tuple(
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                scores[usable, i], (label[usable] == c).astype(float))
            for i, c in enumerate(scored))
        pred = label_text(predictions.iloc[usable]).to_numpy()
        estimated = _correct(classes, calibrators, scores[usable], pred)
        return cls(classes, calibrators, float(np.mean(pred == label[usable])),
                   float(np.mean(estimated)), int(usable.sum()))

    def correct_probability(self, probabilities: pd.DataFrame,
                            predictions: pd.Series) -> np.ndarray:
        """Per row, the calibrated probability that the prediction is right; NaN where the
        row lacks a prediction or a probability."""
        if len(probabilities) != len(predictions):
            raise ValueError("probabilities and predictions must have the same length")
        scores = _scores(probabilities, self.classes)
        usable = np.isfinite(scores).all(axis=1) & predictions.notna().to_numpy()
        out = np.full(len(predictions), np.nan)
        if usable.any():
            pred = label_text(predictions.iloc[usable]).to_numpy()
            out[usable] = _correct(self.classes, self.calibrators, scores[usable], pred)
        return out

    def estimate(self, probabilities: pd.DataFrame, predictions: pd.Series) -> float | None:
        """Expected accuracy of a window; None when no row has probabilities."""
        correct = self.correct_probability(probabilities, predictions)
        return float(np.nanmean(correct)) if np.isfinite(correct).any() else None


def check_estimated(
    estimator: AccuracyEstimator | None,
    probabilities: pd.DataFrame | None,
    predictions: pd.Series,
    *,
    realized_accuracy: float | None,
    config: PerformanceConfig,
) -> EstimatedResult:
    """Estimate a window's accuracy without labels and judge its drop; pure, no I/O.

    ``realized_accuracy`` is only carried along, to be shown next to the estimate.
    """
    reference = estimator.reference_accuracy if estimator is not None else None

    def skipped(reason: str, rows: int = 0) -> EstimatedResult:
        return EstimatedResult(None, reference, None, realized_accuracy, rows, "skipped",
                               (reason,))

    if estimator is None:
        return skipped("no accuracy estimator (the reference has no probabilities or labels)")
    if probabilities is None:
        return skipped("the model logs no probabilities")
    correct = estimator.correct_probability(probabilities, predictions)
    rows = int(np.isfinite(correct).sum())
    if not rows:
        return skipped("no row of the window has a prediction and probabilities")
    estimated = float(np.nanmean(correct))
    drop = estimator.reference_accuracy - estimated
    reasons: tuple[str, ...] = ()
    if drop > config.allowed_estimated_drop:
        reasons = (f"estimated accuracy {estimated:.3f} vs reference "
                   f"{estimator.reference_accuracy:.3f}: drop {drop:.3f} > allowed "
                   f"{config.allowed_estimated_drop:.3f}",)
    return EstimatedResult(estimated, reference, drop, realized_accuracy, rows,
                           "warn" if reasons else "ok", reasons)


def with_estimate(performance: PerformanceResult, estimate: EstimatedResult
                  ) -> PerformanceResult:
    """The performance section with its estimate: an estimated drop warns while accuracy
    is not judged yet (the realized verdict is ``ok`` or ``skipped``)."""
    status, reasons = performance.status, performance.reasons
    if estimate.status == "warn" and status in ("ok", "skipped"):
        status, reasons = "warn", (*reasons, *estimate.reasons)
    return replace(performance, estimated=estimate, status=status, reasons=reasons)
