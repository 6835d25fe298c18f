"""Estimated performance without labels: confidence-based performance estimation (CBPE).

As NannyML's CBPE (0.13.1): on the reference set, where labels are known, decide per
class whether the model's scores need calibrating (``monitor.checks.calibration``: only
when isotonic regression lowers the calibration error on held-out splits) and fit it where
they do; a window's expected accuracy is then the mean calibrated probability of the
predicted class, and its expected F1, precision, recall and ROC AUC follow from the same
probabilities (``monitor.checks.estimated_metrics``). Each estimate comes with its sampling
error and a 3-sigma confidence band (``monitor.checks.sampling_error``). It holds under
covariate shift (P(y|x) unchanged), which is the drift labels arrive too late to show; it
cannot see concept drift.

A drop of the estimated accuracy past ``allowed_estimated_drop`` warns only when the
reference accuracy also lies outside the band (``estimated_band``), so that a small window
does not warn on noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.checks.calibration import CalibrationDecision, IsotonicCurve, decide_calibration
from monitor.checks.classes import ClassRows
from monitor.checks.estimated_metrics import estimated_metrics, expected_accuracy
from monitor.checks.performance import class_names
from monitor.checks.sampling_error import BAND_SIGMAS, Component, SamplingErrors, band
from monitor.config import PerformanceConfig
from monitor.errors import MonitorError
from monitor.results import EstimatedLossResult, EstimatedResult, PerformanceResult
from monitor.schema import ModelSchema, label_text

__all__ = ["AccuracyEstimator", "EstimateRows", "EstimatedResult", "check_estimated",
           "with_estimate"]


def _scores(probabilities: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
    """Rows x scored classes (binary: the positive class only); NaN where missing."""
    named = {str(c): c for c in probabilities.columns}  # no renamed copy of the frame
    n = len(probabilities)

    def column(cls: str) -> np.ndarray:
        values: np.ndarray = probabilities[named[cls]].to_numpy(dtype=float, na_value=np.nan)
        return values

    if len(classes) == 2:
        positive, negative = classes[1], classes[0]
        if positive in named:
            return column(positive).reshape(n, 1)
        if negative in named:  # a model may log only one column of the pair
            return 1.0 - column(negative).reshape(n, 1)
        return np.full((n, 1), np.nan)
    # Column-major: every step below works a class at a time.
    out = np.empty((n, len(classes)), order="F")
    for i, c in enumerate(classes):
        out[:, i] = column(c) if c in named else np.nan
    return out


def _codes(values: pd.Series, classes: tuple[str, ...]) -> np.ndarray:
    """Per row the column of its class; -1 outside the classes."""
    codes: np.ndarray = pd.Categorical(label_text(values).to_numpy(),
                                       categories=list(classes)).codes.astype(int)
    return codes


def _full(scores: np.ndarray) -> np.ndarray:
    """Rows x classes from the scored columns: binary gets its negative column back."""
    if scores.shape[1] == 1:
        full = np.empty((len(scores), 2), order="F")
        full[:, 0], full[:, 1] = 1.0 - scores[:, 0], scores[:, 0]
        return full
    return scores


def _pick(matrix: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The rows ``keep`` picks, column-major as the estimate lays its scores out, in one
    copy (a mask gives a row-major copy that ``asfortranarray`` would copy again)."""
    out = np.empty((int(keep.sum()), matrix.shape[1]), order="F")
    for col in range(matrix.shape[1]):
        out[:, col] = matrix[:, col][keep]
    return out


@dataclass(frozen=True, eq=False)
class EstimateRows:
    """A window's rows as the estimate reads them: which are usable (a prediction and
    every probability), and for those the scores (rows x scored classes, column-major)
    and the predicted class's column. Prepared once, it serves the window's estimate and
    each version's (``AccuracyEstimator.estimate_rows``); calibrating is left to each
    (kept, the calibrated matrices would hold 50 MB per million rows through the check)."""

    usable: np.ndarray  # bool, one per row of the window
    scores: np.ndarray
    pred: np.ndarray


@dataclass(frozen=True)
class AccuracyEstimator:
    """Calibration fitted on the reference set; estimates a window's performance."""

    classes: tuple[str, ...]
    # Per scored class (binary: the positive one only): its isotonic regression, or None
    # where the decision kept the raw scores.
    calibrators: tuple[IsotonicCurve | None, ...]
    calibration: tuple[CalibrationDecision, ...]
    reference_accuracy: float  # realized on the reference rows used to fit
    reference_estimated: float  # the estimate on those same rows
    reference_rows: int
    sampling: SamplingErrors

    @property
    def scored_classes(self) -> tuple[str, ...]:
        return self.classes[1:] if len(self.classes) == 2 else self.classes

    @property
    def calibrated_classes(self) -> tuple[str, ...]:
        """The classes whose scores are calibrated (binary: the positive class or none)."""
        return tuple(c for c, d in zip(self.scored_classes, self.calibration, strict=True)
                     if d.calibrated)

    @property
    def calibration_notes(self) -> dict[str, str]:
        """Per scored class why its scores are (not) calibrated."""
        return {c: d.reason for c, d in zip(self.scored_classes, self.calibration, strict=True)}

    @classmethod
    def fit(cls, probabilities: pd.DataFrame, labels: pd.Series, predictions: pd.Series,
            schema: ModelSchema, *, calibration: Literal["nannyml", "always"] = "nannyml"
            ) -> AccuracyEstimator:
        """Fit on the reference rows that have a label, a prediction and probabilities.

        ``calibration``: ``nannyml`` calibrates the classes NannyML's rule picks;
        ``always`` every class (the rule's figures are still recorded). Raises
        ``MonitorError`` when the schema names fewer than two classes or no reference row
        can be used.
        """
        classes = tuple(class_names(schema))
        if len(classes) < 2:
            raise MonitorError(f"model {schema.model!r}: estimated accuracy needs the classes "
                               "of the prediction in the schema")
        if not len(labels) == len(predictions) == len(probabilities):
            raise ValueError("probabilities, labels and predictions must have the same length")
        scores = _scores(probabilities, classes)
        usable = (np.isfinite(scores).all(axis=1) & predictions.notna().to_numpy()
                  & labels.notna().to_numpy())
        if not usable.any():
            raise MonitorError(f"model {schema.model!r}: no reference row has a label, a "
                               "prediction and probabilities to fit the accuracy estimate on")
        scores = scores[usable]
        label = _codes(labels.iloc[usable], classes)
        pred = _codes(predictions.iloc[usable], classes)
        first_scored = 1 if len(classes) == 2 else 0
        decisions, calibrators = [], []
        for i in range(scores.shape[1]):
            outcome = (label == first_scored + i).astype(int)
            decision = decide_calibration(outcome, scores[:, i])
            if calibration == "always" and not decision.calibrated:
                decision = replace(decision, calibrated=True, reason="calibrated "
                                   "(estimated_calibration: always) where NannyML's rule "
                                   f"would not: {decision.reason}")
            decisions.append(decision)
            calibrators.append(
                IsotonicCurve.fit(scores[:, i], outcome) if decision.calibrated else None)
        sampling = SamplingErrors.fit(label, pred, _full(scores))
        fitted = cls(classes, tuple(calibrators), tuple(decisions),
                     float(np.mean((label == pred) & (label >= 0))), 0.0, int(usable.sum()),
                     sampling)
        correct = fitted._correct(fitted._calibrated(scores), pred)
        return replace(fitted, reference_estimated=float(np.mean(correct)))

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted estimator as JSON-ready figures and named arrays, for storing
        (``from_parts`` gives it back, every value bit for bit)."""
        arrays: dict[str, np.ndarray] = {}
        for i, curve in enumerate(self.calibrators):
            if curve is not None:
                arrays |= {f"{i}.x": curve.x, f"{i}.y": curve.y}
        meta = {
            "classes": list(self.classes),
            "calibrated": [curve is not None for curve in self.calibrators],
            "calibration": [asdict(d) for d in self.calibration],
            "reference_accuracy": self.reference_accuracy,
            "reference_estimated": self.reference_estimated,
            "reference_rows": self.reference_rows,
            "sampling": asdict(self.sampling),
        }
        return meta, arrays

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]
                   ) -> AccuracyEstimator:
        def components(values: list[list[float] | None]) -> tuple[Component, ...]:
            return tuple(None if v is None else (v[0], v[1]) for v in values)

        sampling = meta["sampling"]
        return cls(
            classes=tuple(meta["classes"]),
            calibrators=tuple(IsotonicCurve(arrays[f"{i}.x"], arrays[f"{i}.y"]) if fitted
                              else None for i, fitted in enumerate(meta["calibrated"])),
            calibration=tuple(CalibrationDecision(**d) for d in meta["calibration"]),
            reference_accuracy=meta["reference_accuracy"],
            reference_estimated=meta["reference_estimated"],
            reference_rows=meta["reference_rows"],
            sampling=SamplingErrors(
                binary=sampling["binary"], accuracy=sampling["accuracy"],
                **{k: components(sampling[k]) for k in ("f1", "precision", "recall",
                                                        "roc_auc")}),
        )

    def _calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Rows x classes: the calibrated probabilities of fully scored rows."""
        calibrated = self._calibrated_scored(scores)
        return _full(calibrated) if len(self.classes) == 2 else calibrated

    def _calibrated_scored(self, scores: np.ndarray) -> np.ndarray:
        """``_calibrated``, binary: the positive class's column alone."""
        if len(self.classes) == 2 and self.calibrators[0] is not None:
            # The fitted curve's output is the column (no copy of it into another).
            return self.calibrators[0].predict(scores[:, 0]).reshape(-1, 1)
        calibrated = np.empty(scores.shape, order="F")
        for i, iso in enumerate(self.calibrators):
            calibrated[:, i] = scores[:, i] if iso is None else iso.predict(scores[:, i])
        if len(self.classes) == 2:
            return calibrated
        total = calibrated.sum(axis=1, keepdims=True)
        np.divide(calibrated, total, out=calibrated, where=total != 0)
        # Every class calibrated to 0 (scores below all fitted ones): no information left.
        calibrated[total[:, 0] == 0] = 1.0 / len(self.classes)
        return calibrated

    @staticmethod
    def _correct(calibrated: np.ndarray, pred: np.ndarray) -> np.ndarray:
        known = pred >= 0  # a prediction outside the classes is never right
        return np.where(known, calibrated[np.arange(len(pred)), np.where(known, pred, 0)], 0.0)

    def _window(self, probabilities: pd.DataFrame, predictions: pd.Series
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The usable rows (a prediction and every probability), and for them the calibrated
        and raw probabilities (rows x classes) and the predicted class's column."""
        rows = self.rows(probabilities, predictions)
        return rows.usable, self._calibrated_of(rows.scores), _full(rows.scores), rows.pred

    def _calibrated_of(self, scores: np.ndarray) -> np.ndarray:
        return self._calibrated(scores) if len(scores) else np.empty((0, len(self.classes)))

    def _scored_of(self, scores: np.ndarray) -> np.ndarray:
        return self._calibrated_scored(scores) if len(scores) else np.empty((0, 1))

    def correct_probability(self, probabilities: pd.DataFrame,
                            predictions: pd.Series) -> np.ndarray:
        """Per row, the calibrated probability that the prediction is right; NaN where the
        row lacks a prediction or a probability."""
        usable, calibrated, _, pred = self._window(probabilities, predictions)
        out = np.full(len(predictions), np.nan)
        out[usable] = self._correct(calibrated, pred)
        return out

    def estimate(self, probabilities: pd.DataFrame, predictions: pd.Series) -> float | None:
        """Expected accuracy of a window; None when no row has probabilities."""
        correct = self.correct_probability(probabilities, predictions)
        return float(np.nanmean(correct)) if np.isfinite(correct).any() else None

    def estimate_metrics(self, probabilities: pd.DataFrame, predictions: pd.Series
                         ) -> tuple[int, dict[str, float | None], dict[str, float | None]]:
        """Rows used, the expected accuracy, F1, precision, recall and ROC AUC of a window,
        and the sampling error of each."""
        return self.estimate_rows(self.rows(probabilities, predictions))

    def rows(self, probabilities: pd.DataFrame, predictions: pd.Series,
             classes: ClassRows | None = None) -> EstimateRows:
        """The window's rows prepared for ``estimate_rows``; ``classes``: ``predictions``
        as ``ClassRows.of`` coded them (with the labels), when the caller has them."""
        if len(probabilities) != len(predictions):
            raise ValueError("probabilities and predictions must have the same length")
        scores = _scores(probabilities, self.classes)
        has_pred = classes.has_pred if classes is not None else predictions.notna().to_numpy()
        usable = np.isfinite(scores).all(axis=1) & has_pred
        if not usable.all():
            scores = np.asfortranarray(scores[usable])
        if classes is not None:
            pred = classes.codes_of(self.classes)[classes.pred[usable]]
        else:
            pred = _codes(predictions.iloc[usable] if not usable.all() else predictions,
                          self.classes)
        return EstimateRows(usable, scores, pred)

    def estimate_rows(self, rows: EstimateRows, among: np.ndarray | None = None
                      ) -> tuple[int, dict[str, float | None], dict[str, float | None]]:
        """``estimate_metrics`` of the prepared rows, or of those ``among`` picks (a mask
        over the window's rows): the same figures as ``estimate_metrics`` of those rows'
        frames, since every step before the sums is row by row (the picked columns are
        laid out as that path lays them out, so the sums add in the same order)."""
        scores, pred = rows.scores, rows.pred
        if among is not None:
            keep = among[rows.usable]
            scores, pred = _pick(scores, keep), pred[keep]
        used = len(pred)
        # Binary: the positive class's columns alone (``estimated_metrics``).
        return used, estimated_metrics(self._scored_of(scores), scores, pred), \
            self.sampling.at(used)

    def accuracy_of_rows(self, rows: EstimateRows, among: np.ndarray
                         ) -> tuple[int, float | None, float | None]:
        """``estimate_rows``' accuracy and its sampling error alone, of the rows ``among``
        picks: rows used, the expected accuracy (None: no row), its sampling error."""
        keep = among[rows.usable]
        scores, pred = _pick(rows.scores, keep), rows.pred[keep]
        used = len(pred)
        if not used:
            return 0, None, None
        return used, expected_accuracy(self._scored_of(scores), pred), \
            self.sampling.at(used)["accuracy"]


def check_estimated(
    estimator: AccuracyEstimator | None,
    probabilities: pd.DataFrame | None,
    predictions: pd.Series,
    *,
    realized_accuracy: float | None,
    config: PerformanceConfig,
    unavailable: str | None = None,
    rows: EstimateRows | None = None,
) -> EstimatedResult:
    """Estimate a window's performance without labels and judge its accuracy drop; pure.

    ``realized_accuracy`` is only carried along, to be shown next to the estimate;
    ``unavailable`` says why there is no estimator, when there is none. ``rows``: the
    window's rows as ``estimator.rows`` prepared them from ``probabilities`` and
    ``predictions``, when the caller has them.
    """
    reference = estimator.reference_accuracy if estimator is not None else None
    calibrated = estimator.calibrated_classes if estimator is not None else ()
    notes = estimator.calibration_notes if estimator is not None else {}

    def skipped(reason: str) -> EstimatedResult:
        return EstimatedResult(None, reference, None, realized_accuracy, 0, "skipped",
                               (reason,), calibrated=calibrated, calibration=notes)

    if estimator is None:
        return skipped(unavailable or "no accuracy estimator (the reference has no "
                       "probabilities or labels)")
    if probabilities is None:
        return skipped("the model logs no probabilities")
    if rows is None:
        rows = estimator.rows(probabilities, predictions)
    used, metrics, errors = estimator.estimate_rows(rows)
    if not used:
        return skipped("no row of the window has a prediction and probabilities")
    estimated = metrics["accuracy"]
    assert estimated is not None  # defined whenever a row is
    error = errors["accuracy"]
    lower, upper = band(estimated, error)
    drop = estimator.reference_accuracy - estimated
    warn = False
    reasons: tuple[str, ...] = ()
    if drop > config.allowed_estimated_drop:
        said = (f"estimated accuracy {estimated:.3f} vs reference "
                f"{estimator.reference_accuracy:.3f}: drop {drop:.3f} > allowed "
                f"{config.allowed_estimated_drop:.3f}")
        where = f"the {BAND_SIGMAS:g}-sigma band {lower:.3f}..{upper:.3f} of {used} rows"
        if not config.estimated_band:
            warn, reasons = True, (said,)
        elif upper is not None and estimator.reference_accuracy > upper:
            warn, reasons = True, (f"{said}; the reference lies above {where}",)
        else:  # kept in the document: the drop is within what chance gives this many rows
            reasons = (f"{said}, within sampling error: the reference lies in {where}",)
    bands = {name: band(value, errors.get(name)) for name, value in metrics.items()}
    return EstimatedResult(
        estimated, reference, drop, realized_accuracy, used,
        "warn" if warn else "ok", reasons,
        sampling_error=error, lower_bound=lower, upper_bound=upper, metrics=metrics,
        sampling_errors=errors, calibrated=calibrated, calibration=notes,
        lower_bounds={k: b[0] for k, b in bands.items()},
        upper_bounds={k: b[1] for k, b in bands.items()},
    )


def with_estimate(performance: PerformanceResult,
                  estimate: EstimatedResult | EstimatedLossResult) -> PerformanceResult:
    """The performance section with its estimate: an estimated drop (a classifier's
    accuracy, a regressor's MAE rise) warns while the realized metrics are not judged yet
    (their verdict is ``ok`` or ``skipped``)."""
    status, reasons = performance.status, performance.reasons
    if estimate.status == "warn" and status in ("ok", "skipped"):
        status, reasons = "warn", (*reasons, *estimate.reasons)
    return replace(performance, estimated=estimate, status=status, reasons=reasons)
