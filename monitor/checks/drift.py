"""Drift check: a window's features against the reference, as Evidently 0.7 tests them.

Same semantics as ``DataDriftPreset`` with numerical and categorical columns declared: the
default method per column (by the reference's non-null size and the distinct values of both
sides), the method and threshold precedence of ``DriftConfig``, each test's drift direction, and
the dataset verdict ``share of drifted columns >= drift_share``. The scores are computed here,
on a ``ReferenceProfile`` built once per reference (sorted values, counts), so a window costs a
sort of its own values and a few linear passes; methods not reimplemented in
``monitor.checks.stattests`` run Evidently's own function, imported only then.

Where this differs from the preset on purpose: a column that cannot be tested (missing, no
values on one side, a method that does not apply to its kind) is reported with ``error`` and left
out of the share, where Evidently's ``run()`` fails as a whole. It also reports what Evidently
hides: the null-rate change, and for categories the share of values unseen in the reference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitor.checks import stattests as st
from monitor.config import DriftConfig
from monitor.results import DriftResult, DriftStatus, FeatureDrift
from monitor.schema import label_of
from monitor.text_codes import TextCodes

__all__ = ["ColumnKind", "DriftResult", "FeatureDrift", "ReferenceProfile", "check_column",
           "check_drift"]

ColumnKind = st.ColumnKind
_ANY: tuple[ColumnKind, ...] = ("num", "cat")
# get_binned_data bins a numerical column by Sturges only above this many reference values.
_BIN_ABOVE_UNIQUE = 20


def _numbers(series: pd.Series) -> np.ndarray:
    """float64 values; anything not numeric (a stray "N/A") becomes NaN."""
    coerced = pd.to_numeric(series, errors="coerce")
    return np.asarray(coerced.to_numpy(dtype=np.float64, na_value=np.nan))


def _encode(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Label ids of the non-null values in row order, and the distinct labels."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if series.dtype == object and any(isinstance(v, bool | np.bool_) for v in uniques):
        # factorize merges True with 1 and 1.0 (equal in Python): label every value instead.
        codes, uniques = pd.factorize(series.map(label_of, na_action="ignore"))
    ids: dict[str, int] = {}
    lut = np.array([ids.setdefault(label_of(v), len(ids)) for v in uniques], dtype=np.int64)
    # The reference keeps these codes: the smallest integer type that holds them.
    lut = lut.astype(np.min_scalar_type(max(len(ids) - 1, 0)))
    present = codes[codes >= 0]
    return (lut[present] if len(lut) else present.astype(lut.dtype)), list(ids)


def _text_numbers(texts: TextCodes) -> np.ndarray | None:
    """``_numbers`` of a column of texts, floats and nulls, when none of its texts reads
    as a number (a stray "N/A": every text becomes NaN); None otherwise."""
    if len(texts.words) and pd.to_numeric(pd.Series(texts.words, dtype=object),
                                          errors="coerce").notna().any():
        return None
    if texts.numbers is None:
        return np.full(len(texts), np.nan)
    return np.array(texts.numbers, dtype=np.float64)


def _encode_texts(texts: TextCodes) -> tuple[np.ndarray, list[str]]:
    """``_encode`` of a column of texts and nulls, from its codes: the same labels in the
    same order (of their first row)."""
    present = texts.codes[texts.codes >= 0]
    codes, order = pd.factorize(present)
    ids: dict[str, int] = {}
    lut = np.array([ids.setdefault(label_of(v), len(ids)) for v in texts.words[order]],
                   dtype=np.int64)
    lut = lut.astype(np.min_scalar_type(max(len(ids) - 1, 0)))
    return (lut[codes] if len(lut) else codes.astype(lut.dtype)), list(ids)


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


@dataclass(frozen=True, eq=False)
class _NumRef:
    values: np.ndarray  # finite values, sorted
    std: float
    n_unique: int
    unique: np.ndarray  # distinct values and counts, kept only when few (<= _BIN_ABOVE_UNIQUE):
    counts: np.ndarray  # the only case a test reads them
    null_rate: float


@dataclass(frozen=True, eq=False)
class _CatRef:
    labels: tuple[str, ...]
    index: Mapping[str, int]
    counts: np.ndarray
    codes: np.ndarray  # label ids in row order: TVD and delegated tests depend on the order
    null_rate: float


_NO_CATEGORIES = _CatRef((), {}, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8), 1.0)


def _num_ref(series: pd.Series) -> _NumRef | str:
    raw = _numbers(series)
    values = raw[np.isfinite(raw)]
    if not len(values):
        return "no finite values in the reference"
    values.sort()
    values.flags.writeable = False  # shared by every window: no test may sort or fill it
    unique, counts = st.run_lengths(values)
    n_unique = len(unique)
    if n_unique > _BIN_ABOVE_UNIQUE:  # fresh empties: a slice would keep the arrays alive
        unique, counts = np.empty(0), np.empty(0, dtype=np.int64)
    return _NumRef(
        values=values, std=float(np.std(values)), n_unique=n_unique, unique=unique, counts=counts,
        null_rate=_rate(int(np.count_nonzero(np.isnan(raw))), len(raw)),
    )


def _cat_ref(series: pd.Series) -> _CatRef | str:
    codes, labels = _encode(series)
    if not len(codes):
        return "no values in the reference"
    codes.flags.writeable = False
    return _CatRef(
        labels=tuple(labels), index={label: i for i, label in enumerate(labels)},
        counts=np.bincount(codes, minlength=len(labels)), codes=codes,
        null_rate=_rate(len(series) - len(codes), len(series)),
    )


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """Everything that depends only on the reference: built once per reference version and
    reused for every window (sorted values, category counts, unique values, null rates, row
    count). A column that cannot be tested keeps the reason instead."""

    columns: Mapping[str, ColumnKind]
    rows: int
    _stats: Mapping[str, _NumRef | _CatRef | str] = field(repr=False)

    @classmethod
    def build(cls, reference: pd.DataFrame, columns: Mapping[str, ColumnKind]) -> ReferenceProfile:
        stats: dict[str, _NumRef | _CatRef | str] = {}
        for name, kind in columns.items():
            if kind not in _ANY:
                raise ValueError(f"column {name!r}: kind must be 'num' or 'cat', not {kind!r}")
            if name not in reference.columns:
                stats[name] = "column missing in the reference"
            else:
                series = reference[name]
                stats[name] = _num_ref(series) if kind == "num" else _cat_ref(series)
        return cls(columns=dict(columns), rows=len(reference), _stats=stats)

    def null_rate(self, name: str) -> float:
        stat = self._stats[name]
        return 1.0 if isinstance(stat, str) else stat.null_rate

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The profile as JSON-ready figures and named arrays, for storing
        (``from_parts`` gives it back, every value bit for bit)."""
        stats: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for i, (name, stat) in enumerate(self._stats.items()):
            if isinstance(stat, str):
                stats[name] = {"error": stat}
            elif isinstance(stat, _NumRef):
                stats[name] = {"num": i, "std": stat.std, "n_unique": stat.n_unique,
                               "null_rate": stat.null_rate}
                arrays |= {f"{i}.values": stat.values, f"{i}.unique": stat.unique,
                           f"{i}.counts": stat.counts}
            else:
                stats[name] = {"cat": i, "labels": list(stat.labels),
                               "null_rate": stat.null_rate}
                arrays |= {f"{i}.codes": stat.codes, f"{i}.counts": stat.counts}
        return {"columns": dict(self.columns), "rows": self.rows, "stats": stats}, arrays

    @classmethod
    def from_parts(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                   ) -> ReferenceProfile:
        stats: dict[str, _NumRef | _CatRef | str] = {}
        for name, figures in meta["stats"].items():
            if "error" in figures:
                stats[name] = figures["error"]
                continue
            i = figures.get("num", figures.get("cat"))
            held = {key.split(".", 1)[1]: arrays[key] for key in arrays
                    if key.startswith(f"{i}.")}
            for values in held.values():
                values.flags.writeable = False  # shared by every window, as when built
            if "num" in figures:
                stats[name] = _NumRef(values=held["values"], std=figures["std"],
                                      n_unique=figures["n_unique"], unique=held["unique"],
                                      counts=held["counts"], null_rate=figures["null_rate"])
            else:
                labels = tuple(figures["labels"])
                stats[name] = _CatRef(labels=labels,
                                      index={label: k for k, label in enumerate(labels)},
                                      counts=held["counts"], codes=held["codes"],
                                      null_rate=figures["null_rate"])
        return cls(columns=dict(meta["columns"]), rows=meta["rows"], _stats=stats)


@dataclass(frozen=True)
class _NumCur:
    values: np.ndarray  # finite values, sorted
    null_rate: float


@dataclass(frozen=True)
class _CatCur:
    labels: list[str]  # the reference's labels, then those new in this window
    codes: np.ndarray  # ids into labels, row order
    ref_counts: np.ndarray  # both over labels
    counts: np.ndarray
    null_rate: float
    unseen_share: float | None


def _num_cur(series: pd.Series, texts: TextCodes | None = None) -> _NumCur:
    raw = _text_numbers(texts) if texts is not None else None
    if raw is None:
        raw = _numbers(series)
    finite = np.isfinite(raw)
    values = raw[finite] if not finite.all() else raw.copy()
    values.sort()
    return _NumCur(values, _rate(int(np.count_nonzero(np.isnan(raw))), len(raw)))


def _cat_cur(series: pd.Series, ref: _CatRef, texts: TextCodes | None = None) -> _CatCur:
    codes, labels = (_encode_texts(texts) if texts is not None and texts.numbers is None
                     else _encode(series))
    known, union = dict(ref.index), list(ref.labels)
    for label in labels:
        if label not in known:
            known[label] = len(union)
            union.append(label)
    if labels:  # into the union's ids: the reference's labels keep theirs
        codes = np.array([known[label] for label in labels], dtype=np.int64)[codes]
    counts = np.bincount(codes, minlength=len(union))
    ref_counts = np.zeros(len(union), dtype=np.int64)
    ref_counts[:len(ref.labels)] = ref.counts
    unseen = _rate(int(counts[len(ref.labels):].sum()), len(codes)) if len(codes) else None
    return _CatCur(union, codes, ref_counts, counts,
                   _rate(len(series) - len(codes), len(series)), unseen)


def _resolve(config: DriftConfig, name: str, kind: ColumnKind) -> tuple[str | None, float | None]:
    """Method and threshold as DataDriftOptions resolves them: per column, then per kind, then
    all; None leaves the choice to the default test and its own threshold."""
    typed = config.cat_method if kind == "cat" else config.num_method
    method = config.per_column_method.get(name, typed if typed is not None else config.method)
    if name in config.per_column_threshold:
        return method, config.per_column_threshold[name]
    typed_threshold = config.cat_threshold if kind == "cat" else config.num_threshold
    return method, typed_threshold if typed_threshold is not None else config.threshold


def _num_union_size(ref: _NumRef, cur: _NumCur, limit: int | None = None) -> int:
    """Distinct values of both sides (pandas' nunique of the two concatenated); past ``limit``
    any number above it, so the common case stops at the reference's count."""
    if limit is not None and ref.n_unique > limit:
        return limit + 1
    cur_unique, _ = st.run_lengths(cur.values)
    if limit is not None and len(cur_unique) > limit:
        return limit + 1
    ref_unique = ref.unique if len(ref.unique) == ref.n_unique else st.run_lengths(ref.values)[0]
    return st.union_size(ref_unique, cur_unique)


def _default_method(ref: _NumRef | _CatRef, cur: _NumCur | _CatCur) -> str:
    if isinstance(ref, _NumRef) and isinstance(cur, _NumCur):
        n_ref, n_values = len(ref.values), _num_union_size(ref, cur, 5)
        if n_values > 5:
            return "ks" if n_ref <= 1000 else "wasserstein"
    else:
        assert isinstance(ref, _CatRef) and isinstance(cur, _CatCur)
        n_ref, n_values = len(ref.codes), len(cur.labels)
    if n_ref <= 1000:
        return "chisquare" if n_values > 2 else "z"
    return "jensenshannon"


def _key_counts(ref: _NumRef | _CatRef, cur: _NumCur | _CatCur
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Counts per distinct value (union of both sides) and the index of the smallest key."""
    if isinstance(cur, _CatCur):
        first = min(range(len(cur.labels)), key=cur.labels.__getitem__)
        return cur.ref_counts, cur.counts, first
    assert isinstance(ref, _NumRef)
    unique, counts = ref.unique, ref.counts
    if ref.n_unique > len(unique):  # not kept: recount (never on a default or allowed path)
        unique, counts = st.run_lengths(ref.values)
    return (*st.union_counts(unique, counts, *st.run_lengths(cur.values)), 0)


def _binned(ref: _NumRef | _CatRef, cur: _NumCur | _CatCur) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin as utils.get_binned_data forms them: Sturges bins over both samples for a
    numerical column with many reference values, else one bin per distinct value."""
    if isinstance(ref, _NumRef) and isinstance(cur, _NumCur) and ref.n_unique > _BIN_ABOVE_UNIQUE:
        a, b = ref.values, cur.values
        edges = st.sturges_edges(min(a[0], b[0]), max(a[-1], b[-1]), len(a) + len(b))
        return st.histogram_sorted(a, edges), st.histogram_sorted(b, edges)
    ref_counts, cur_counts, _ = _key_counts(ref, cur)
    return ref_counts, cur_counts


def _native_score(method: str, ref: _NumRef | _CatRef, cur: _NumCur | _CatCur) -> float:
    if method in ("jensenshannon", "psi", "kl_div"):
        ref_p, cur_p = st.binned_percents(*_binned(ref, cur), fill_zeroes=method != "jensenshannon")
        return {"jensenshannon": st.jensenshannon, "psi": st.psi, "kl_div": st.kl_div}[method](
            ref_p, cur_p)
    if method in ("chisquare", "z"):
        ref_counts, cur_counts, first = _key_counts(ref, cur)
        if method == "z":
            return st.z_pvalue(ref_counts, cur_counts, first)
        return st.chisquare_pvalue(ref_counts, cur_counts)
    if isinstance(ref, _CatRef) and isinstance(cur, _CatCur):
        if method == "hellinger":
            return st.hellinger_cat(cur.ref_counts, cur.counts)
        return st.tvd_pvalue(ref.codes, cur.codes, cur.labels)  # TVD
    assert isinstance(ref, _NumRef) and isinstance(cur, _NumCur)
    if method == "hellinger":
        n_unique = _num_union_size(ref, cur)
        return st.hellinger_num(ref.values, cur.values, n_unique)
    if method == "ks":
        return st.ks_pvalue(ref.values, cur.values)
    return st.wasserstein_norm(ref.values, cur.values, ref.std)


def _delegated(method: str, ref: _NumRef | _CatRef, cur: _NumCur | _CatCur,
               threshold: float | None) -> tuple[float, bool, float]:
    """Evidently's own test, given pandas Series as the preset gives it (NaN/inf dropped)."""
    if isinstance(ref, _CatRef) and isinstance(cur, _CatCur):
        labels = np.array(cur.labels, dtype=object)
        return st.evidently_test(method, pd.Series(labels[ref.codes]),
                                 pd.Series(labels[cur.codes]), "cat", threshold)
    assert isinstance(ref, _NumRef) and isinstance(cur, _NumCur)
    # Sorted, not in row order: every numerical test delegated is order-free.
    return st.evidently_test(method, pd.Series(ref.values), pd.Series(cur.values), "num",
                             threshold)


def _check_column(name: str, kind: ColumnKind, profile: ReferenceProfile,
                  current: pd.DataFrame, config: DriftConfig,
                  texts: TextCodes | None = None) -> FeatureDrift:
    ref = profile._stats[name]
    null_ref = profile.null_rate(name)

    def untested(error: str, null_cur: float = 1.0, unseen: float | None = None) -> FeatureDrift:
        return FeatureDrift(name, kind, None, None, None, False, null_ref, null_cur,
                            null_cur - null_ref, unseen, error)

    if name not in current.columns:
        return untested("column missing in the current window")
    series = current[name]
    if texts is not None and len(texts) != len(series):
        texts = None
    cur: _NumCur | _CatCur
    if kind == "num":
        cur = _num_cur(series, texts)
        unseen = None
    else:
        cur = _cat_cur(series, ref if isinstance(ref, _CatRef) else _NO_CATEGORIES, texts)
        unseen = cur.unseen_share
    if isinstance(ref, str):
        return untested(ref, cur.null_rate, unseen)
    if not (len(cur.values) if isinstance(cur, _NumCur) else len(cur.codes)):
        return untested("no values in the current window", cur.null_rate, unseen)
    method, threshold = _resolve(config, name, kind)
    if method is not None:
        kinds = st.NATIVE[method].kinds if method in st.NATIVE else st.DELEGATED.get(method, ())
        if kind not in kinds:
            return untested(f"method {method!r} does not apply to {kind} columns",
                            cur.null_rate, unseen)
    else:
        method = _default_method(ref, cur)
    try:
        if method in st.NATIVE:
            spec = st.NATIVE[method]
            threshold = spec.threshold if threshold is None else threshold
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # scipy's exact-KS fallback
                score = _native_score(method, ref, cur)
            drifted = bool(spec.drifted(score, threshold))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # third-party noise from Evidently's own tests
                score, drifted, threshold = _delegated(method, ref, cur, threshold)
    except Exception as exc:  # one column's failure must not take the whole check down
        return untested(f"{method} failed: {type(exc).__name__}: {exc}", cur.null_rate, unseen)
    return FeatureDrift(name, kind, method, score, threshold, drifted, null_ref, cur.null_rate,
                        cur.null_rate - null_ref, unseen)


def _beyond_chance(drifted: int, tested: int, config: DriftConfig) -> bool:
    """Whether ``drifted`` of ``tested`` columns is more than chance explains."""
    if not drifted:
        return False
    if config.warn_chance_rate is None:
        return True
    return binomial_tail(drifted, tested, config.warn_chance_rate) < config.warn_significance


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): scipy.stats.binom.sf(k - 1, n, p), summed here in
    log space (importing scipy.stats takes half a second; n is a count of columns)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    return min(1.0, math.fsum(
        math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
                 + (n - i) * log_q) for i in range(k, n + 1)))


def _null_jumps(features: tuple[FeatureDrift, ...], config: DriftConfig) -> list[str]:
    out = []
    for f in features:
        limit = config.per_column_max_null_rate_change.get(f.feature,
                                                           config.max_null_rate_change)
        if limit is not None and f.null_rate_change > limit:
            out.append(f"{f.feature}: null rate {f.null_rate_current:.1%} vs reference "
                       f"{f.null_rate_reference:.1%}: up {f.null_rate_change:.1%} > "
                       f"allowed {limit:.1%}")
    return out


def check_column(profile: ReferenceProfile, current: pd.DataFrame, name: str, *,
                 config: DriftConfig) -> FeatureDrift:
    """One profiled column of ``current`` tested against the reference, as ``check_drift``
    tests it (the versions check tests each version's predictions so)."""
    return _check_column(name, profile.columns[name], profile, current, config)


def check_drift(profile: ReferenceProfile, current: pd.DataFrame, *,
                config: DriftConfig, prediction: str | None = None,
                texts: Mapping[str, TextCodes] | None = None) -> DriftResult:
    """Test each profiled column of ``current`` against the reference; pure, no I/O.
    ``texts``: columns of ``current`` whose rows are all texts, floats or nulls, as codes
    into their distinct texts (the same result, without a pass over each row's value).

    Each column's score and verdict are Evidently's. The section's status: ``severity``
    when the share of drifted columns reaches ``drift_share`` (the prediction column,
    named by ``prediction``, counts unless ``prediction_in_share`` is false); ``warn``
    when more columns drifted than chance explains (``warn_chance_rate``) or a null rate
    jumped (``max_null_rate_change``); else ``ok``.
    """
    features = tuple(
        _check_column(name, kind, profile, current, config, (texts or {}).get(name))
        for name, kind in profile.columns.items()
    )
    counted = [f for f in features if f.method is not None
               and (config.prediction_in_share or f.feature != prediction)]
    drifted_counted = sum(f.drifted for f in counted)
    share = _rate(drifted_counted, len(counted))
    dataset_drift = bool(counted) and share >= config.drift_share
    drifted = [f for f in features if f.drifted]
    untested = [f for f in features if f.error]
    jumps = _null_jumps(features, config)
    beyond = _beyond_chance(drifted_counted, len(counted), config)
    status: DriftStatus = (config.severity if dataset_drift
                           else "warn" if beyond or jumps else "ok")
    reasons: list[str] = []
    if drifted or untested:
        chance = "" if dataset_drift or beyond or not drifted_counted else ", within chance"
        reasons.append(f"{drifted_counted} of {len(counted)} columns drifted "
                       f"(share {share:.0%}, limit {config.drift_share:.0%}{chance})")
        reasons += [f"{f.feature}: {f.method} {f.score:.4g} vs threshold {f.threshold:.4g}"
                    for f in drifted if f.score is not None and f.threshold is not None]
        reasons += [f"{f.feature}: not tested ({f.error})" for f in untested]
    reasons += jumps
    return DriftResult(
        features=features,
        share_drifted=share,
        drift_share=config.drift_share,
        dataset_drift=dataset_drift,
        rows_reference=profile.rows,
        rows_current=len(current),
        status=status,
        reasons=tuple(reasons),
    )
