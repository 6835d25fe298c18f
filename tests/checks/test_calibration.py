"""The calibration rule's steps against scikit-learn's, which NannyML calls: the same
splits, the same isotonic fit, the same ROC AUC; and neither scikit-learn nor
scipy.optimize imported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import isotonic_regression
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit

import monitor.checks.calibration as calibration
from monitor.checks.calibration import (
    IsotonicCurve,
    _pool_adjacent_violators,
    _roc_auc,
    _stratified_splits,
)
from tests.conftest import ROOT


def _outcomes(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    weights = rng.dirichlet(np.ones(classes))
    return rng.choice(classes, size=n, p=weights)


@pytest.mark.parametrize("seed", range(12))
def test_the_splits_are_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 3000))
    outcome = _outcomes(rng, n, int(rng.choice([2, 2, 3, 5])))
    if np.bincount(outcome).min() < 2 or np.count_nonzero(np.bincount(outcome)) < 2:
        outcome[:4] = [0, 0, 1, 1]
    share, random_state = float(rng.choice([0.1, 0.25])), int(rng.integers(0, 100))
    want = StratifiedShuffleSplit(n_splits=10, test_size=share, random_state=random_state)
    got = list(_stratified_splits(outcome, 10, share, random_state))
    expected = list(want.split(np.zeros(n), outcome))
    assert len(got) == len(expected) == 10
    for (train, test), (want_train, want_test) in zip(got, expected, strict=True):
        assert np.array_equal(train, want_train) and np.array_equal(test, want_test)


@pytest.mark.parametrize("outcome", [
    np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1]),  # an outcome of one row
    np.array([0, 0, 1, 1]),  # a test side of one row cannot hold both outcomes
    np.array([0, 1]),
    np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1]),  # three outcomes, a test side of two rows
])
def test_the_splits_refuse_what_scikit_learn_refuses(outcome: np.ndarray) -> None:
    try:
        list(StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=42).split(
            np.zeros(len(outcome)), outcome))
    except ValueError:
        with pytest.raises(ValueError):
            list(_stratified_splits(outcome, 10, 0.1, 42))
    else:
        assert len(list(_stratified_splits(outcome, 10, 0.1, 42))) == 10


@pytest.mark.parametrize("seed", range(10))
def test_the_isotonic_fit_is_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 4000))
    scores = rng.beta(2, 3, n)
    if seed % 3 == 1:
        scores = np.round(scores, int(rng.integers(1, 4)))  # many ties
    if seed % 3 == 2:
        # Scores a hair apart: steps below float64's resolution that add up past it,
        # grouped one score at a time as scikit-learn groups them.
        scores = 0.5 + np.round(rng.integers(0, 40, n) * 4e-16, 18)
    outcome = (rng.random(n) < np.clip(scores, 0, 1)).astype(int)
    iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores, outcome)
    curve = IsotonicCurve.fit(scores, outcome)
    assert np.array_equal(curve.x, iso.X_thresholds_)
    assert np.array_equal(curve.y, iso.y_thresholds_)
    # Its predictions too, bit for bit: at the fitted scores, between them, and beyond
    # both ends (scikit-learn clips, mqm's curve lets ``interp`` hold the ends).
    new = np.concatenate([scores, rng.uniform(-0.5, 1.5, 500), [curve.x[0], curve.x[-1]]])
    assert np.array_equal(curve.predict(new), iso.predict(new))


@pytest.mark.parametrize("seed", range(8))
def test_the_roc_auc_is_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 5000))
    outcome = rng.integers(0, 2, n)
    outcome[:2] = [0, 1]
    scores = rng.random(n) + 0.3 * outcome
    if seed % 2:
        scores = np.round(scores, 1)  # ties, counted half
    assert _roc_auc(outcome, scores) == pytest.approx(roc_auc_score(outcome, scores),
                                                      rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError):
        _roc_auc(np.ones(5, dtype=int), scores[:5])


def test_the_rule_imports_no_scikit_learn() -> None:
    code = (
        "import sys, numpy as np\n"
        "from monitor.checks.calibration import decide_calibration\n"
        "rng = np.random.default_rng(1)\n"
        "scores = rng.random(2000)\n"
        "outcome = (rng.random(2000) < scores ** 2).astype(int)\n"
        "decision = decide_calibration(outcome, scores)\n"
        "assert decision.ece_after is not None, decision\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'\n"
        "             or m.startswith('scipy.optimize')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("seed", range(16))
def test_the_pool_adjacent_violators_are_scipys_number_for_number(seed: int) -> None:
    """The fit done here gives scipy's doubles, not close ones: outcome rates of tied
    scores with their counts (what the curve fits), plain values with real weights, runs
    of equal values, and a decreasing run that pools into one block."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30_000)) if seed > 3 else [1, 2, 7, 500][seed]
    kind = seed % 4
    if kind == 0:
        counts = rng.integers(1, 6, n).astype(float)
        values = rng.binomial(counts.astype(int), rng.beta(2, 3, n)) / counts
        weights = counts
    elif kind == 1:
        values, weights = rng.normal(size=n), rng.uniform(0.01, 5.0, n)
    elif kind == 2:
        values, weights = np.round(rng.random(n), 1), np.ones(n)  # equal neighbours
    else:
        values, weights = np.sort(rng.random(n))[::-1].copy(), rng.uniform(0.5, 2.0, n)
    want = isotonic_regression(values, weights=weights, increasing=True).x
    got = _pool_adjacent_violators(values.copy(), weights.copy())
    assert got.dtype == np.float64 and np.array_equal(got, want)


def test_many_points_are_fitted_by_scipy_with_the_same_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(5000)
    outcome = (rng.random(5000) < scores).astype(int)
    here = IsotonicCurve.fit(scores, outcome)
    monkeypatch.setattr(calibration, "PAVA_IN_PYTHON", 100)
    monkeypatch.setattr(calibration, "_pool_adjacent_violators", None)  # must not be used
    there = IsotonicCurve.fit(scores, outcome)
    assert np.array_equal(here.x, there.x) and np.array_equal(here.y, there.y)
