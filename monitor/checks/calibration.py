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

NannyML takes each step from scikit-learn (``roc_auc_score``, ``StratifiedShuffleSplit``,
``IsotonicRegression``); importing it cost the first check of a new reference 0.9 s and
about 120 MB, for 0.05 s of work. The steps are done here instead, with the same numbers
(``tests/checks/test_calibration.py`` holds them to scikit-learn's): the same random
draws for the splits, and the pool-adjacent-violators fit that scikit-learn has scipy
do, step for step (``_pool_adjacent_violators``): importing ``scipy.optimize`` for it
cost the first check of a new reference 0.7-1 s, for fits of a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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
        """scikit-learn's ``IsotonicRegression(increasing=True).fit`` of 0/1 outcomes: the
        rows sorted by score (then outcome), the outcomes of equal scores averaged, the
        pool-adjacent-violators fit over them, and the points between two of the same
        fitted value dropped."""
        x = np.asarray(scores, dtype=float).reshape(-1)
        y = np.asarray(outcome, dtype=float).reshape(-1)
        order = np.lexsort((y, x))
        x, y, weights = _merge_ties(x[order], y[order])
        fitted = _isotonic(y, weights)
        keep = np.ones(len(fitted), dtype=bool)
        keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
        return cls(x[keep], fitted[keep])

    def predict(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if len(self.x) == 1:  # one distinct score fitted: a constant
            return np.full(scores.shape, self.y[0])
        # ``interp`` holds the ends beyond the fitted scores itself (its ``left`` and
        # ``right``): scikit-learn's ``clip`` first gives the same values, through one
        # more copy of every score.
        out: np.ndarray = np.interp(scores, self.x, self.y)
        return out


# Up to this many points the fit runs here, in Python (5 ms per 10,000 points, 40 per
# 100,000, measured); beyond, in scipy's C, whose import (0.7-1 s) the points then repay.
PAVA_IN_PYTHON = 200_000


def _isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The increasing isotonic fit of ``values`` with positive ``weights``: scipy's
    ``isotonic_regression(values, weights=weights).x``, number for number."""
    if len(values) > PAVA_IN_PYTHON:
        from scipy.optimize import isotonic_regression

        return np.asarray(isotonic_regression(values, weights=weights, increasing=True).x,
                          dtype=float)
    return _pool_adjacent_violators(values, weights)


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pool adjacent violators as Busing (2022, "Monotone Regression: A Simple and Fast
    O(n) PAVA Implementation", Algorithm 1) gives it, with scipy's two changes (a block
    also pools with an equal neighbour, ``>=``; the published lines 9-10 read element
    ``i``), so that every sum and quotient is the one scipy's C computes, in its order:
    the same doubles, not just close ones."""
    level, mass = values.tolist(), weights.tolist()  # block values and weights, in place
    n = len(level)
    if n == 0:
        return np.zeros(0)
    end = [0] * (n + 1)  # end[k + 1]: one past the last element of block k
    end[1] = 1
    top = 0  # the last block so far
    last_level, last_mass = level[0], mass[0]
    i = 1
    while i < n:
        top += 1
        here, weight = level[i], mass[i]
        if last_level >= here:  # a violation: pool with the block before
            top -= 1
            total = last_mass * last_level + weight * here
            weight += last_mass
            here = total / weight
            while i < n - 1 and here >= level[i + 1]:  # take in what follows while it
                i += 1                                # is no higher
                total += mass[i] * level[i]
                weight += mass[i]
                here = total / weight
            while top > 0 and level[top - 1] >= here:  # and what precedes, while higher
                top -= 1
                total += mass[top] * level[top]
                weight += mass[top]
                here = total / weight
        level[top] = last_level = here
        mass[top] = last_mass = weight
        end[top + 1] = i + 1
        i += 1
    sizes = np.diff(np.asarray(end[:top + 2]))
    return np.repeat(np.asarray(level[:top + 1], dtype=float), sizes)


def _merge_ties(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted scores ``x`` grouped as scikit-learn's ``_make_unique`` groups them (a group
    runs while a score is less than float64's resolution above the group's first), with
    each group's first score, mean outcome and size. The outcomes are 0 and 1, so their
    sums are exact in any order."""
    eps = np.finfo(np.float64).resolution
    starts = np.r_[0, np.flatnonzero(np.diff(x) >= eps) + 1]
    ends = np.r_[starts[1:], len(x)]
    if len(x) and (x[ends - 1] - x[starts] >= eps).any():
        # Steps each below the resolution that add up past it: one score at a time.
        begun, first = [0], x[0]
        for j in range(1, len(x)):
            if x[j] - first >= eps:
                begun.append(j)
                first = x[j]
        starts = np.asarray(begun)
    sizes = np.diff(np.r_[starts, len(x)]).astype(float)
    return x[starts], np.add.reduceat(y, starts) / sizes, sizes


def _roc_auc(outcome: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 outcomes, both present: the share of (positive, negative) pairs the
    scores rank right, ties counted half (the area under the ROC curve, as
    ``roc_auc_score`` computes it)."""
    from monitor.checks.performance import pairs_auc

    auc = pairs_auc(outcome == 1, scores)
    if auc is None:
        raise ValueError("one outcome only")
    return auc


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` rows each class gives: its share rounded down, the rest to
    the largest remainders, ties broken at random (scikit-learn's ``_approximate_mode``,
    the same draws from ``rng``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    if missing > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), missing)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            missing -= now
            if missing == 0:
                break
    out: np.ndarray = floored.astype(int)
    return out


def _stratified_splits(outcome: np.ndarray, splits: int, test_share: float, seed: int
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedShuffleSplit(n_splits=splits, test_size=test_share,
    random_state=seed).split``'s train and test rows: each class shuffled apart, as many
    of its rows in each part as its share gives, both parts shuffled, every draw from
    one ``RandomState(seed)`` in scikit-learn's order. ``ValueError`` where it raises."""
    n = len(outcome)
    n_test = math.ceil(test_share * n)
    n_train = n - n_test
    if n_train <= 0:
        raise ValueError(f"{n} rows leave none to fit on")
    classes, inverse, counts = np.unique(outcome, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError("an outcome has fewer than 2 rows")
    if min(n_train, n_test) < len(classes):
        raise ValueError(f"{n} rows cannot hold every outcome on both sides")
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    for _ in range(splits):
        train_counts = _apportion(counts, n_train, rng)
        test_counts = _apportion(counts - train_counts, n_test, rng)
        train: list[int] = []
        test: list[int] = []
        for rows, count, k, t in zip(by_class, counts, train_counts, test_counts,
                                     strict=True):
            shuffled = rows.take(rng.permutation(count), mode="clip")
            train.extend(shuffled[:k])
            test.extend(shuffled[k:k + t])
        yield rng.permutation(train), rng.permutation(test)


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
    outcome = np.asarray(outcome, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(outcome)) < 2:
        return CalibrationDecision(False, "one outcome in the reference labels: nothing to "
                                   "calibrate against")
    auc = _roc_auc(outcome, scores)
    if auc > AUC_LIMIT:
        return CalibrationDecision(False, f"ROC AUC {auc:.4f} > {AUC_LIMIT} on the reference: "
                                   "the scores separate the outcomes", roc_auc=auc)
    held_out, raw, calibrated = [], [], []
    try:
        for train, test in _stratified_splits(outcome, SPLITS, TEST_SHARE, SEED):
            curve = IsotonicCurve.fit(scores[train], outcome[train])
            held_out.append(outcome[test])
            raw.append(scores[test])
            calibrated.append(curve.predict(scores[test]))
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
