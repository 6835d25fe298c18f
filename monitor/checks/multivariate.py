"""Multivariate drift: can a classifier tell the window's rows from the reference's?

Univariate tests compare one column at a time, so a change in how features move together
(a correlation that flips sign while each marginal stays put) passes all of them. Two
checks here look at the rows whole, on a bounded sample of each side:

- **Domain classifier** (as NannyML's and alibi-detect's): gradient boosting
  (scikit-learn's ``HistGradientBoostingClassifier``) learns reference (0) against window
  (1); its cross-validated ROC AUC is 0.5 when the two cannot be told apart. The
  confidence interval comes from DeLong's variance of each held-out fold's AUC.
  Categorical features are ordinal codes fitted on the reference (its most frequent
  values; rarer ones share one code, values the reference never had another) and split
  natively as categories. What moved: permutation importance on a held-out fold (the
  drop of AUC when one feature is shuffled), because gradient boosting over histograms
  has no impurity importance and because a shuffled feature breaks exactly the joint
  structure the classifier relies on, so both partners of a changed correlation show.
  Only once the AUC's interval lies above 0.5: below, the classifier is no better than
  chance and every feature's drop is noise.
- **PCA reconstruction error** (NannyML's DataReconstructionDriftCalculator): the
  numerical features, imputed and standardized on the reference, are projected on the
  components keeping 65% of the reference's variance and back; the window's mean error
  leaving the reference's mean +- 3 sigma is drift (when ``reconstruction: judge``; by
  default it is reported, not judged). Categorical features are left out
  (one-hot dummies of rare values would dominate the standardized variance; the
  classifier covers categories). The reference's errors are measured on a half of its
  sample held out from the fit, so that a fit's own rows do not set a band too low, and
  sigma is that of the difference between the window's mean and the held-out mean.

scikit-learn is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monitor.config import MultivariateConfig
from monitor.results import ColumnKind, FeatureImportance, MultivariateResult
from monitor.schema import label_of

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier

__all__ = ["MultivariateReference", "check_multivariate", "delong_variance"]

# Categories kept per column: HistGradientBoosting splits at most 255 bins natively, and
# two codes are taken by "rarer in the reference" and "never in the reference".
MAX_CATEGORIES = 250
PCA_VARIANCE = 0.65  # NannyML's default share of variance the components keep
PCA_SIGMAS = 3.0
_Z95 = 1.959963984540054
_PERMUTATION_REPEATS = 3
# Held-out rows per fold the importances are measured on: a feature's importance is a
# ranking aid, and each of (features x repeats) predictions costs as many rows.
_PERMUTATION_ROWS = 5000
# Rows each fold's classifier is fitted on, at most (a uniform draw of the fold's training
# part); every held-out row is still scored, so the AUC's interval keeps the whole sample.
# Above this, fits cost linearly for an AUC that no longer moves: at 100,000 rows per side
# the section took 30 s with every row fitted (bench/multivariate.py).
MAX_TRAIN_ROWS = 20_000


def _numbers(series: pd.Series) -> np.ndarray:
    """float64 values; text that is no number and +-inf become NaN (the classifier takes
    missing values, not infinities)."""
    out = np.asarray(pd.to_numeric(series, errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan))
    out[~np.isfinite(out)] = np.nan
    return out


def _labels(series: pd.Series) -> pd.Series:
    return series.map(label_of, na_action="ignore")


def _codes(series: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Ordinal codes of the reference's ``categories``; rarer reference values share code
    ``len(categories)`` and values the reference lacks ``len(categories) + 1``; NaN: null.
    Which rarer values the reference had is not kept, so they count as unseen too."""
    index = {label: float(i) for i, label in enumerate(categories)}
    labels = _labels(series)
    out: np.ndarray = labels.map(index).to_numpy(dtype=np.float64, na_value=np.nan)
    unknown = np.isnan(out) & labels.notna().to_numpy()
    out[unknown] = float(len(categories) + 1)
    return out


def _seed32(seed: int) -> int:
    return seed % (2**32)


@dataclass(frozen=True, eq=False)
class MultivariateReference:
    """A uniform sample of the reference's rows as one float matrix (categories as their
    ordinal codes), with what encodes a window the same way. Built once per reference
    version and kept in its profile."""

    columns: tuple[str, ...]
    kinds: tuple[ColumnKind, ...]
    categories: Mapping[str, tuple[str, ...]]
    matrix: np.ndarray  # rows x columns, float64, NaN for missing
    rows: int  # of the whole reference

    @classmethod
    def build(cls, reference: pd.DataFrame, columns: Mapping[str, ColumnKind], *,
              sample_rows: int, seed: int) -> MultivariateReference:
        """``sample_rows`` rows drawn with ``seed``; ``columns`` the features to compare
        (a column missing from the reference is left out)."""
        rng = np.random.default_rng(seed)
        frame = reference
        if len(frame) > sample_rows:
            frame = frame.iloc[np.sort(rng.choice(len(frame), sample_rows, replace=False))]
        names, kinds, cats, parts = [], [], {}, []
        for name, kind in columns.items():
            if name not in frame.columns:
                continue
            if kind == "num":
                parts.append(_numbers(frame[name]))
            else:
                # Most frequent first; ties by label so that a rebuild codes them alike.
                counts = _labels(reference[name]).value_counts()
                order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                cats[name] = tuple(str(k) for k, _ in order[:MAX_CATEGORIES])
                parts.append(_codes(frame[name], cats[name]))
            names.append(name)
            kinds.append(kind)
        matrix = (np.column_stack(parts) if parts else np.empty((len(frame), 0)))
        return cls(columns=tuple(names), kinds=tuple(kinds), categories=cats,
                   matrix=np.ascontiguousarray(matrix, dtype=np.float64), rows=len(reference))

    def encode(self, current: pd.DataFrame) -> np.ndarray:
        """The window's rows coded as the reference's; a column the window lacks is all
        missing."""
        parts = []
        for name, kind in zip(self.columns, self.kinds, strict=True):
            if name not in current.columns:
                parts.append(np.full(len(current), np.nan))
            elif kind == "num":
                parts.append(_numbers(current[name]))
            else:
                parts.append(_codes(current[name], self.categories[name]))
        if not parts:
            return np.empty((len(current), 0))
        return np.column_stack(parts)

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able figures and arrays, for the stored profile."""
        meta = {"columns": list(self.columns), "kinds": list(self.kinds),
                "categories": {k: list(v) for k, v in self.categories.items()},
                "rows": self.rows}
        return meta, {"matrix": self.matrix}

    @classmethod
    def from_parts(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                   ) -> MultivariateReference:
        return cls(columns=tuple(meta["columns"]), kinds=tuple(meta["kinds"]),
                   categories={k: tuple(v) for k, v in meta["categories"].items()},
                   matrix=np.asarray(arrays["matrix"], dtype=np.float64), rows=int(meta["rows"]))


def reference_seed(version: str) -> int:
    """The reference sample's seed: its content hash, so every process draws the same."""
    return int.from_bytes(hashlib.sha256(version.encode()).digest()[:8], "little")


def delong_variance(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """ROC AUC of ``scores`` for ``labels`` (1 positive) and DeLong's estimate of its
    variance (DeLong, DeLong & Clarke-Pearson 1988, by midranks as Sun & Xu 2014)."""
    from scipy.stats import rankdata

    pos, neg = scores[labels == 1], scores[labels == 0]
    n1, n0 = len(pos), len(neg)
    combined = rankdata(np.concatenate([pos, neg]))
    r_pos, r_neg = combined[:n1], combined[n1:]
    v10 = (r_pos - rankdata(pos)) / n0  # per positive: share of negatives below it
    v01 = 1.0 - (r_neg - rankdata(neg)) / n1  # per negative: share of positives above it
    auc = float((r_pos.sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    var = float(np.var(v10, ddof=1) / n1 + np.var(v01, ddof=1) / n0)
    return auc, var


def domain_classifier(categorical: Sequence[bool], seed: int) -> HistGradientBoostingClassifier:
    """The classifier, as the check fits it (a test can fit the same one)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None,
        random_state=_seed32(seed))


def domain_folds(folds: int, seed: int) -> Any:
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=_seed32(seed))


def _classifier(x: np.ndarray, y: np.ndarray, columns: Sequence[str],
                categorical: Sequence[bool], folds: int, seed: int
                ) -> tuple[float, float, float, dict[str, float]]:
    """Cross-validated AUC (mean over folds), its 95% interval, and each feature's
    permutation importance on the first held-out fold: measured only when the interval
    lies above 0.5, all zero when the classifier cannot tell the sides apart."""
    from sklearn.inspection import permutation_importance

    aucs, variances = [], []
    importance = np.zeros(len(columns))
    rng = np.random.default_rng(seed)
    first: tuple[Any, np.ndarray] | None = None  # the first fold's model, its held-out rows
    for train, test in domain_folds(folds, seed).split(x, y):
        if len(train) > MAX_TRAIN_ROWS:
            train = np.sort(rng.choice(train, MAX_TRAIN_ROWS, replace=False))
        model = domain_classifier(categorical, seed).fit(x[train], y[train])
        scores = model.predict_proba(x[test])[:, 1]
        auc, var = delong_variance(scores, y[test])
        aucs.append(auc)
        variances.append(var)
        if first is None:
            first = (model, test)
    auc = float(np.mean(aucs))
    # Held-out folds are disjoint: the mean's variance is the sum of theirs over k^2.
    half = _Z95 * float(np.sqrt(np.sum(variances))) / len(aucs)
    lower, upper = max(0.0, auc - half), min(1.0, auc + half)
    if first is not None and lower > 0.5:
        # What moved, once something did: a classifier no better than chance gives each
        # feature a drop of noise, and measuring it was a third of a clean window's
        # section (25 features x 3 repeats of predictions). On the first held-out fold
        # only: over all five it was 70% of the check's time and named the same features.
        model, test = first
        importance = permutation_importance(
            model, x[test], y[test], scoring="roc_auc", n_repeats=_PERMUTATION_REPEATS,
            max_samples=min(len(test), _PERMUTATION_ROWS),
            random_state=_seed32(seed)).importances_mean
    return (auc, lower, upper,
            dict(zip(columns, np.asarray(importance).tolist(), strict=True)))


def _reconstruction(ref: np.ndarray, cur: np.ndarray, seed: int
                    ) -> tuple[float, float, float, float, int]:
    """Window's mean error, the reference's, the band's bounds and the components kept."""
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ref))
    fit_rows, held_rows = order[: len(ref) // 2], order[len(ref) // 2:]
    prep = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True),
                         StandardScaler())
    fit = prep.fit_transform(ref[fit_rows])
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit(fit)

    def errors(rows: np.ndarray) -> np.ndarray:
        z = prep.transform(rows)
        back = pca.inverse_transform(pca.transform(z))
        return np.asarray(np.sqrt(((z - back) ** 2).sum(axis=1)))

    held = errors(ref[held_rows])
    # Sigma of the difference of two means, the window's and the held-out reference's:
    # NannyML's band (the spread of reference chunks' means) leaves out the second,
    # which a bounded reference sample cannot (it raised false alarms in 2 of 10 clean
    # windows of 5,000 rows).
    mean = float(held.mean())
    sigma = float(held.std(ddof=1)) * float(np.sqrt(1 / len(held) + 1 / len(cur)))
    return (float(errors(cur).mean()), mean, mean - PCA_SIGMAS * sigma,
            mean + PCA_SIGMAS * sigma, int(pca.n_components_))


def check_multivariate(reference: MultivariateReference, current: pd.DataFrame, *,
                       config: MultivariateConfig, seed: int) -> MultivariateResult:
    """The window's rows against the reference sample: at most ``config.sample_rows`` of
    the window's, drawn with ``seed`` (the run seeds it by the window). Too few rows on
    either side, or no feature to compare: ``insufficient_data``, never a verdict."""
    rng = np.random.default_rng(seed)
    if len(current) > config.sample_rows:
        current = current.iloc[np.sort(rng.choice(len(current), config.sample_rows,
                                                  replace=False))]
    ref, cur = reference.matrix, reference.encode(current)
    base: dict[str, Any] = {"rows_reference": len(ref), "rows_current": len(cur),
            "features": reference.columns}
    short = [f"{side} {n} rows < multivariate.min_rows {config.min_rows}"
             for side, n in (("reference", len(ref)), ("window", len(cur)))
             if n < config.min_rows]
    if not reference.columns:
        short.append("no feature to compare")
    if short:
        return MultivariateResult(status="insufficient_data", reasons=tuple(short), **base)
    x = np.vstack([ref, cur])
    y = np.concatenate([np.zeros(len(ref), dtype=np.int64), np.ones(len(cur), dtype=np.int64)])
    categorical = [kind == "cat" for kind in reference.kinds]
    from threadpoolctl import threadpool_limits

    # One OpenMP thread: gradient boosting's threads busy-wait, and on a machine shared
    # with other checks they ran several times slower than one (bench/multivariate.py).
    with threadpool_limits(limits=1, user_api="openmp"):
        auc, lower, upper, importance = _classifier(x, y, reference.columns, categorical,
                                                    config.folds, seed)
    top = sorted(((f, v) for f, v in importance.items() if v > 0), key=lambda fv: -fv[1])
    top_features = tuple(FeatureImportance(f, v) for f, v in top[: config.top_features])
    reasons = []
    if auc > config.auc_threshold:
        named = ", ".join(f"{f.feature} ({f.importance:.3f})" for f in top_features)
        reasons.append(f"domain classifier AUC {auc:.3f} (95% CI {lower:.3f}-{upper:.3f}) > "
                       f"{config.auc_threshold}" + (f"; top features: {named}" if named else ""))
    recon: dict[str, Any] = {}
    numeric = [i for i, kind in enumerate(reference.kinds) if kind == "num"]
    if config.reconstruction != "off" and len(numeric) >= 2:
        error, mean, low, high, components = _reconstruction(ref[:, numeric], cur[:, numeric],
                                                             seed)
        recon = {"reconstruction_error": error, "reconstruction_reference": mean,
                 "reconstruction_lower": low, "reconstruction_upper": high,
                 "components": components}
        if config.reconstruction == "judge" and not low <= error <= high:
            reasons.append(f"PCA reconstruction error {error:.3f} outside the reference's "
                           f"{low:.3f}..{high:.3f} ({components} components)")
    return MultivariateResult(
        status=config.severity if reasons else "ok", reasons=tuple(reasons), auc=auc,
        auc_lower=lower, auc_upper=upper, auc_threshold=config.auc_threshold,
        folds=config.folds, top_features=top_features, **recon, **base)
