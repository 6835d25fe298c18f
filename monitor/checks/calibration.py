"""Whether a class's scores need calibrating before they are read as probabilities.

NannyML's rule (``nannyml/calibration.py: needs_calibration``, 0.13.1), kept step for
step so that mqm's estimate equals CBPE's on the same data:

1. one outcome in the reference labels: no calibration (nothing to calibrate against);
2. ROC AUC of the scores above 0.999: no calibration (isotonic regression would turn
   near-perfect scores into steps of 0 and 1);
3. otherwise ten stratified shuffled 90/10 splits (seed 42): isotonic regression fitted
   on each 90 %, applied to its 10 %; the ten held-out parts are pooled and the expected
   calibration error (ten equal-count bins over the sorted scores) computed before and
   after. Calibrate only when it is lower after.

Where NannyML raises (too few reference rows for ten splits or for two bins), mqm does
not calibrate and says why. Fitted once per reference version, never per window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AUC_LIMIT",
    "BINS",
    "SPLITS",
    "CalibrationDecision",
    "IsotonicCurve",
    "decide_calibration",
    "expected_calibration_error",
]

BINS = 10
SPLITS = 10
TEST_SHARE = 0.1
SEED = 42
AUC_LIMIT = 0.999


@dataclass(frozen=True)
class CalibrationDecision:
    """Whether one class's scores are calibrated, and the figures that decided it."""

    calibrated: bool
    reason: str
    roc_auc: float | None = None
    ece_before: float | None = None  # pooled held-out parts, raw scores
    ece_after: float | None = None  # the same rows, isotonic-calibrated


@dataclass(frozen=True, eq=False)
class IsotonicCurve:
    """A fitted isotonic regression, kept as the points it interpolates between.

    ``predict`` is scikit-learn's ``IsotonicRegression(out_of_bounds="clip").predict``
    number for number: it clips to the fitted range, then interpolates linearly, which
    scipy's ``interp1d`` does with ``np.interp`` for 1-D float64 data. Kept this way, a
    stored reference profile applies its calibration without importing scikit-learn.
    """

    x: np.ndarray  # increasing thresholds; the first and last are the fitted range
    y: np.ndarray  # the fitted value at each

    @classmethod
    def fit(cls, scores: np.ndarray, outcome: np.ndarray) -> IsotonicCurve:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores, outcome)
        return cls(np.asarray(iso.X_thresholds_, dtype=float),
                   np.asarray(iso.y_thresholds_, dtype=float))

    def predict(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if len(self.x) == 1:  # one distinct score fitted: a constant
            return np.full(scores.shape, self.y[0])
        out: np.ndarray = np.interp(np.clip(scores, self.x[0], self.x[-1]), self.x, self.y)
        return out


def _bin_edges(length: int, bins: int) -> list[tuple[int, int]]:
    """Equal-count bins over ``length`` sorted rows, the last one taking the remainder
    (NannyML's ``_get_bin_index_edges``). Raises ``ValueError`` below two bins."""
    if length <= 2 * bins:
        bins = length // 2
        if bins < 2:
            raise ValueError(f"{length} rows cannot be split into two bins")
    width = length // bins
    edges = np.asarray(range(0, length + 1, width))
    edges[-1] = length
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def expected_calibration_error(outcome: np.ndarray, scores: np.ndarray,
                               edges: list[tuple[int, int]]) -> float:
    """Row-weighted mean gap between mean score and outcome rate per bin of sorted scores.

    Sorted with numpy's default (unstable) sort, as NannyML does: ties, which isotonic
    output is full of, fall into bins in the same order, so the error is the same number.
    """
    order = np.asarray(scores).argsort()
    sorted_scores, sorted_outcome = np.asarray(scores)[order], np.asarray(outcome)[order]
    n = len(sorted_scores)
    terms = [(right - left) / n * abs(np.mean(sorted_scores[left:right])
                                      - np.mean(sorted_outcome[left:right]))
             for left, right in edges]
    return float(np.sum(terms))


def decide_calibration(outcome: np.ndarray, scores: np.ndarray) -> CalibrationDecision:
    """Decide for one class: ``outcome`` 1 where the label is the class, else 0; ``scores``
    the model's raw score for the class on the same reference rows (no NaN)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    outcome = np.asarray(outcome, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(outcome)) < 2:
        return CalibrationDecision(False, "one outcome in the reference labels: nothing to "
                                   "calibrate against")
    auc = float(roc_auc_score(outcome, scores))
    if auc > AUC_LIMIT:
        return CalibrationDecision(False, f"ROC AUC {auc:.4f} > {AUC_LIMIT} on the reference: "
                                   "the scores separate the outcomes", roc_auc=auc)
    splits = StratifiedShuffleSplit(n_splits=SPLITS, test_size=TEST_SHARE, random_state=SEED)
    held_out, raw, calibrated = [], [], []
    try:
        for train, test in splits.split(scores, outcome):
            iso = IsotonicRegression(out_of_bounds="clip", increasing=True)
            iso.fit(scores[train], outcome[train])
            held_out.append(outcome[test])
            raw.append(scores[test])
            calibrated.append(iso.predict(scores[test]))
        pooled = np.concatenate(held_out)
        edges = _bin_edges(len(pooled), BINS)
    except ValueError as exc:  # NannyML raises here; mqm keeps the raw scores
        return CalibrationDecision(False, f"too few reference rows to test calibration "
                                   f"({exc})", roc_auc=auc)
    before = expected_calibration_error(pooled, np.concatenate(raw), edges)
    after = expected_calibration_error(pooled, np.concatenate(calibrated), edges)
    figures = (f"expected calibration error {before:.4f} raw, {after:.4f} isotonic on "
               f"{SPLITS} held-out splits")
    if before > after:
        return CalibrationDecision(True, f"calibrated: {figures}", auc, before, after)
    return CalibrationDecision(False, f"not calibrated: {figures}", auc, before, after)
