"""The multivariate drift check on frames: a correlation change caught with the pair named,
a clean window left alone, the AUC and its interval against scikit-learn computed here, and
what happens with too few rows, categories and the reconstruction error's modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitor.checks.multivariate import MultivariateReference, check_multivariate
from monitor.config import MultivariateConfig
from monitor.results import MultivariateResult
from monitor.run.reference import ReferenceData, decode_profile, encode_profile

KINDS = {"a": "num", "b": "num", "n0": "num", "n1": "num", "c": "cat"}


def frame(rows: int, rho: float, seed: int) -> pd.DataFrame:
    """Two standard gaussians with correlation ``rho``, two independent ones and a
    category: every marginal is the same whatever ``rho``."""
    rng = np.random.default_rng(seed)
    ab = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=rows)
    return pd.DataFrame({"a": ab[:, 0], "b": ab[:, 1], "n0": rng.normal(size=rows),
                         "n1": rng.normal(size=rows),
                         "c": rng.choice(["x", "y", "z"], size=rows, p=[0.5, 0.3, 0.2])})


def reference(rows: int = 2000, seed: int = 1) -> MultivariateReference:
    return MultivariateReference.build(frame(rows, 0.8, seed), KINDS,  # type: ignore[arg-type]
                                       sample_rows=5000, seed=3)


CONFIG = MultivariateConfig(enabled=True)


def test_a_correlation_that_flips_sign_is_caught_with_the_pair_on_top() -> None:
    result = check_multivariate(reference(), frame(2000, -0.8, 2), config=CONFIG, seed=11)
    assert result.status == "warn"  # the default severity
    assert result.auc is not None and result.auc > 0.8
    assert result.auc_lower is not None and result.auc_lower > CONFIG.auc_threshold
    assert {f.feature for f in result.top_features[:2]} == {"a", "b"}
    # The others barely matter: shuffling a or b breaks the pair, shuffling n0 nothing.
    rest = [f.importance for f in result.top_features[2:]]
    assert all(v < 0.1 * result.top_features[1].importance for v in rest)
    (reason,) = result.reasons
    assert reason.startswith(f"domain classifier AUC {result.auc:.3f} (95% CI ")
    assert "top features: a (" in reason or "top features: b (" in reason
    # The reconstruction error sees it too (reported, not judged, by default).
    assert result.reconstruction_error is not None and result.reconstruction_upper is not None
    assert result.reconstruction_error > result.reconstruction_upper


def test_a_clean_window_stays_quiet() -> None:
    result = check_multivariate(reference(), frame(2000, 0.8, 2), config=CONFIG, seed=11)
    assert result.status == "ok" and result.reasons == ()
    assert result.auc is not None and abs(result.auc - 0.5) < 0.03
    assert result.auc_lower is not None and result.auc_upper is not None
    assert result.auc_lower <= 0.5 <= result.auc_upper
    assert result.reconstruction_lower is not None and result.reconstruction_upper is not None
    assert result.reconstruction_lower <= result.reconstruction_error  # type: ignore[operator]
    assert result.reconstruction_error <= result.reconstruction_upper  # type: ignore[operator]


@pytest.mark.parametrize("seed", [3, 4, 5, 6, 7])
def test_a_classifier_no_better_than_chance_names_no_feature(seed: int) -> None:
    """Clean windows: the AUC's interval holds 0.5, and no feature is named (measured on
    such a classifier, every drop is noise: 'a' came out at 0.022 on one of these)."""
    result = check_multivariate(reference(), frame(2000, 0.8, seed), config=CONFIG, seed=11)
    assert result.auc_lower is not None and result.auc_lower <= 0.5
    assert result.status == "ok" and result.top_features == ()


def test_a_window_told_apart_below_the_threshold_still_names_what_moved() -> None:
    """The AUC's interval above 0.5 but the AUC under the threshold: no warning, and the
    pair whose correlation weakened is named, first."""
    result = check_multivariate(reference(), frame(2000, 0.6, 2), config=CONFIG, seed=11)
    assert result.status == "ok" and result.reasons == ()
    assert result.auc is not None and result.auc < CONFIG.auc_threshold
    assert result.auc_lower is not None and result.auc_lower > 0.5
    assert {f.feature for f in result.top_features[:2]} == {"a", "b"}


def test_auc_and_interval_match_scikit_learn_computed_here() -> None:
    """The AUC is cross_val_score's over the same folds and model; the interval's half-width
    agrees with a bootstrap of each held-out fold's AUC."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    ref_frame, cur_frame, seed = frame(1500, 0.8, 5), frame(1000, 0.3, 6), 2**33 + 17
    ref = MultivariateReference.build(ref_frame, KINDS,  # type: ignore[arg-type]
                                      sample_rows=5000, seed=3)
    result = check_multivariate(ref, cur_frame, config=CONFIG, seed=seed)

    # Independently: categories as codes by frequency in the reference, then sklearn.
    order = ref_frame["c"].value_counts().index.tolist()
    both = pd.concat([ref_frame, cur_frame], ignore_index=True)
    x = both.assign(c=both["c"].map({v: i for i, v in enumerate(order)})).to_numpy(float)
    y = np.r_[np.zeros(len(ref_frame)), np.ones(len(cur_frame))].astype(int)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed % 2**32)
    model = HistGradientBoostingClassifier(
        categorical_features=[False, False, False, False, True], random_state=seed % 2**32)
    scores = cross_val_score(model, x, y, cv=folds, scoring="roc_auc")
    assert result.auc == pytest.approx(scores.mean(), abs=1e-9)
    assert 0.6 < result.auc < 0.9  # a shift the interval has room around

    rng = np.random.default_rng(0)
    variances = []
    for train, test in folds.split(x, y):
        held = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
        pos, neg = np.flatnonzero(y[test] == 1), np.flatnonzero(y[test] == 0)
        boot = [roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                              np.r_[held[rng.choice(pos, len(pos))],
                                    held[rng.choice(neg, len(neg))]]) for _ in range(300)]
        variances.append(np.var(boot, ddof=1))
    half = 1.959964 * np.sqrt(np.sum(variances)) / 5
    assert result.auc_lower is not None and result.auc_upper is not None
    assert result.auc_upper - result.auc == pytest.approx(half, rel=0.15)
    assert result.auc - result.auc_lower == pytest.approx(half, rel=0.15)


@pytest.mark.parametrize(("ref_rows", "cur_rows", "why"), [
    (2000, 150, "window 150 rows < multivariate.min_rows 200"),
    (150, 2000, "reference 150 rows < multivariate.min_rows 200"),
])
def test_too_few_rows_is_insufficient_data_not_a_verdict(ref_rows: int, cur_rows: int,
                                                         why: str) -> None:
    result = check_multivariate(reference(ref_rows), frame(cur_rows, -0.8, 2), config=CONFIG,
                                seed=1)
    assert result.status == "insufficient_data"
    assert result.reasons == (why,)
    assert result.auc is None and result.top_features == ()


def test_samples_are_bounded_and_seeded_by_the_window() -> None:
    config = MultivariateConfig(enabled=True, sample_rows=500)
    ref = MultivariateReference.build(frame(3000, 0.8, 1), KINDS,  # type: ignore[arg-type]
                                      sample_rows=500, seed=3)
    assert ref.matrix.shape == (500, 5) and ref.rows == 3000
    window = frame(3000, -0.8, 2)
    one = check_multivariate(ref, window, config=config, seed=7)
    assert (one.rows_reference, one.rows_current) == (500, 500)
    assert check_multivariate(ref, window, config=config, seed=7) == one  # a rerun agrees
    assert check_multivariate(ref, window, config=config, seed=8).auc != one.auc


def test_categories_are_coded_on_the_reference() -> None:
    ref = MultivariateReference.build(
        pd.DataFrame({"c": ["x"] * 5 + ["y"] * 3 + ["z"]}), {"c": "cat"}, sample_rows=100,
        seed=1)
    assert ref.categories == {"c": ("x", "y", "z")}
    coded = ref.encode(pd.DataFrame({"c": ["y", "x", "new", None, "z"]}))[:, 0]
    np.testing.assert_array_equal(coded, [1, 0, 4, np.nan, 2])  # unseen: past "rarer" (3)

    # A category that moves with a number (not in its own share) is caught, and named.
    rng = np.random.default_rng(0)
    n = rng.normal(size=4000)
    ref_frame = pd.DataFrame({"n": n[:2000], "c": np.where(n[:2000] > 0, "hi", "lo")})
    cur_frame = pd.DataFrame({"n": n[2000:], "c": np.where(n[2000:] > 0, "lo", "hi")})
    ref = MultivariateReference.build(ref_frame, {"n": "num", "c": "cat"}, sample_rows=5000,
                                      seed=1)
    result = check_multivariate(ref, cur_frame, config=CONFIG, seed=1)
    assert result.status == "warn" and result.auc is not None and result.auc > 0.95
    assert {f.feature for f in result.top_features} == {"n", "c"}
    assert result.reconstruction_error is None  # one numerical feature: no PCA


@pytest.mark.parametrize("mode", ["off", "report", "judge"])
def test_reconstruction_modes(mode: str) -> None:
    config = MultivariateConfig(enabled=True, reconstruction=mode,  # type: ignore[arg-type]
                                auc_threshold=0.99, severity="critical")
    result = check_multivariate(reference(), frame(2000, -0.8, 2), config=config, seed=11)
    if mode == "off":
        assert result.reconstruction_error is None and result.components is None
    else:
        assert result.components is not None and 1 <= result.components < 4
        assert result.reconstruction_error > result.reconstruction_upper  # type: ignore[operator]
    # The AUC stays under 0.99: only a judged reconstruction error makes a verdict.
    assert result.auc is not None and result.auc < 0.99
    if mode == "judge":
        assert result.status == "critical"
        (reason,) = result.reasons
        assert reason.startswith("PCA reconstruction error ") and "outside the " in reason
    else:
        assert result.status == "ok" and result.reasons == ()


def test_the_reference_sample_survives_the_stored_profile() -> None:
    from monitor.checks.drift import ReferenceProfile

    ref = reference(300)
    data = ReferenceData(version="v", rows=300, drift_profile=ReferenceProfile.build(
        frame(300, 0.8, 1), KINDS), metrics={}, estimator=None, estimator_error="none",  # type: ignore[arg-type]
        multivariate=ref)
    back = decode_profile(encode_profile(data)).multivariate
    assert back is not None
    assert (back.columns, back.kinds, back.categories, back.rows) == (
        ref.columns, ref.kinds, ref.categories, ref.rows)
    np.testing.assert_array_equal(back.matrix, ref.matrix)
    assert decode_profile(encode_profile(
        ReferenceData(**{**data.__dict__, "multivariate": None}))).multivariate is None


def test_result_round_trips_through_its_document() -> None:
    from monitor.typed_json import from_json

    result = check_multivariate(reference(), frame(1000, -0.8, 2), config=CONFIG, seed=1)
    assert from_json(MultivariateResult, result.as_dict()) == result


def test_large_samples_fit_on_a_bounded_draw_but_score_every_row(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above MAX_TRAIN_ROWS each fold's classifier fits on a draw of its training part;
    every held-out row is still scored, so the interval stays as narrow."""
    from monitor.checks import multivariate

    ref, window = reference(1500), frame(1500, -0.5, 2)
    whole = check_multivariate(ref, window, config=CONFIG, seed=4)
    monkeypatch.setattr(multivariate, "MAX_TRAIN_ROWS", 400)
    bounded = check_multivariate(ref, window, config=CONFIG, seed=4)
    assert bounded.auc != whole.auc  # fitted on fewer rows
    assert (bounded.rows_reference, bounded.rows_current) == (1500, 1500)
    assert bounded.auc is not None and whole.auc is not None and bounded.auc > 0.7
    width = bounded.auc_upper - bounded.auc_lower  # type: ignore[operator]
    assert width == pytest.approx(whole.auc_upper - whole.auc_lower, rel=0.3)  # type: ignore[operator]
