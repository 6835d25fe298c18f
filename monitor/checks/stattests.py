"""Evidently 0.7's drift statistics, computed from sorted values and category counts.

Each function reproduces one test of ``evidently.legacy.calculations.stattests`` (the same
binning, zero filling, p-value formula and tie handling) up to floating-point rounding, but
takes what the drift check caches: the reference sorted once, per-category counts, codes. The
Evidently source each one follows is named in its docstring. Only ``evidently_test``, for the
methods not reimplemented here, imports evidently.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DELEGATED",
    "NATIVE",
    "ColumnKind",
    "Method",
    "binned_percents",
    "chisquare_pvalue",
    "evidently_test",
    "hellinger_cat",
    "hellinger_num",
    "histogram_sorted",
    "jensenshannon",
    "kl_div",
    "ks_pvalue",
    "psi",
    "run_lengths",
    "sturges_edges",
    "tvd_pvalue",
    "union_counts",
    "union_size",
    "wasserstein_norm",
    "z_pvalue",
]

ColumnKind = Literal["num", "cat"]
_NUM: tuple[ColumnKind, ...] = ("num",)
_CAT: tuple[ColumnKind, ...] = ("cat",)
_ANY: tuple[ColumnKind, ...] = ("num", "cat")


@dataclass(frozen=True)
class Method:
    """A test as Evidently declares it (its StatTest)."""

    # Kinds it accepts when chosen explicitly; its default choice also runs chisquare and z on
    # numeric columns with few values, unchecked.
    kinds: tuple[ColumnKind, ...]
    threshold: float  # its default threshold
    drifted: Callable[[float, float], bool]  # p-values drift below it, distances at or above


_P_LE, _P_LT, _DIST = operator.le, operator.lt, operator.ge
NATIVE: dict[str, Method] = {  # computed here
    "ks": Method(_NUM, 0.05, _P_LE),
    "chisquare": Method(_CAT, 0.05, _P_LT),
    "z": Method(_CAT, 0.05, _P_LT),
    "wasserstein": Method(_NUM, 0.1, _DIST),
    "jensenshannon": Method(_ANY, 0.1, _DIST),
    "psi": Method(_ANY, 0.1, _DIST),
    "kl_div": Method(_ANY, 0.1, _DIST),
    "hellinger": Method(_ANY, 0.1, _DIST),
    "TVD": Method(_CAT, 0.1, _P_LT),
}
DELEGATED: dict[str, tuple[ColumnKind, ...]] = {  # run by evidently_test
    "t_test": _NUM, "mannw": _NUM, "anderson": _NUM, "cramer_von_mises": _NUM, "ed": _NUM,
    "es": _NUM, "empirical_mmd": _NUM, "fisher_exact": _CAT, "g_test": _CAT,
}
# scipy.stats.ks_2samp(method="auto") is exact up to this many values per sample.
KS_EXACT_MAX_N = 10_000
TVD_ITERATIONS = 1000
_W1_BLOCK = 1 << 16


def sturges_edges(lo: float, hi: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(x, bins="sturges")`` from x's min, max and size alone."""
    first, last = np.float64(lo), np.float64(hi)
    width = (last - first) / (np.log2(size) + 1.0)  # numpy uses the data's ptp, not the padded one
    if first == last:
        first, last = first - 0.5, last + 0.5
    n_bins = int(np.ceil((last - first) / width)) if width else 1
    edges = np.linspace(first, last, n_bins + 1)
    if np.any(edges[:-1] >= edges[1:]):
        raise ValueError(f"too many bins for data range [{lo}, {hi}]")
    return edges


def histogram_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(values, edges)[0]`` for sorted values: [e_i, e_i+1), the last bin closed."""
    cum = np.concatenate((
        sorted_values.searchsorted(edges[:-1], "left"),
        sorted_values.searchsorted(edges[-1:], "right"),
    ))
    return np.diff(cum)


def run_lengths(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs."""
    if not len(sorted_values):
        return sorted_values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    return sorted_values[starts], np.diff(np.append(starts, len(sorted_values)))


def union_counts(ref_keys: np.ndarray, ref_counts: np.ndarray, cur_keys: np.ndarray,
                 cur_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' counts over the sorted union of their distinct values (0 where absent)."""
    keys = np.union1d(ref_keys, cur_keys)
    ref_full = np.zeros(len(keys), dtype=np.int64)
    ref_full[np.searchsorted(keys, ref_keys)] = ref_counts
    cur_full = np.zeros(len(keys), dtype=np.int64)
    cur_full[np.searchsorted(keys, cur_keys)] = cur_counts
    return ref_full, cur_full


def union_size(ref_keys: np.ndarray, cur_keys: np.ndarray) -> int:
    """How many distinct values two sorted distinct arrays hold together."""
    if not len(ref_keys):
        return len(cur_keys)
    at = np.minimum(np.searchsorted(ref_keys, cur_keys), len(ref_keys) - 1)
    return len(ref_keys) + len(cur_keys) - int(np.count_nonzero(ref_keys[at] == cur_keys))


def _fill_zeroes(percents: np.ndarray) -> np.ndarray:
    """utils.get_binned_data(feel_zeroes=True): empty bins get a small share so logs stay finite."""
    smallest = percents[percents != 0].min()
    fill = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return np.where(percents == 0, fill, percents)


def binned_percents(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, fill_zeroes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Shares per bin (or per category) of each side, as utils.get_binned_data returns them."""
    ref = ref_counts / ref_counts.sum()
    cur = cur_counts / cur_counts.sum()
    if fill_zeroes:
        return _fill_zeroes(ref), _fill_zeroes(cur)
    return ref, cur


def rel_entr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scipy.special.rel_entr, number for number: x log(x/y) where both are positive, 0
    where x is 0 and y is not negative, NaN where either is, else inf. Per element with
    the C library's log and log1p, as scipy computes it (numpy's log may differ in the
    last bit); the vectors are a column's bins or categories, and importing
    scipy.special would cost a quarter second."""
    out = np.empty(len(x))
    for i, (a, b) in enumerate(zip(np.asarray(x, dtype=float).tolist(),
                                   np.asarray(y, dtype=float).tolist(), strict=True)):
        if math.isnan(a) or math.isnan(b):
            out[i] = math.nan
        elif a > 0 and b > 0:
            ratio = a / b  # scipy (its xsf library) takes log1p near 1, for accuracy
            out[i] = a * (math.log1p((a - b) / b) if 0.5 < ratio < 2 else math.log(ratio))
        elif a == 0 and b >= 0:
            out[i] = 0.0
        else:
            out[i] = math.inf
    return out


def jensenshannon(ref: np.ndarray, cur: np.ndarray) -> float:
    """scipy.spatial.distance.jensenshannon (natural log) of two share vectors."""
    p = ref / np.sum(ref)
    q = cur / np.sum(cur)
    m = (p + q) / 2.0
    js = np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))
    return float(np.sqrt(js / 2.0))


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """psi._psi on zero-filled shares."""
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def kl_div(ref: np.ndarray, cur: np.ndarray) -> float:
    """scipy.stats.entropy(ref, cur) on zero-filled shares, as kl_div._kl_div calls it."""
    return float(np.sum(rel_entr(ref / np.sum(ref), cur / np.sum(cur))))


def _hellinger(affinity: float) -> float:
    return float(np.sqrt(1 - np.clip(affinity, 0, 1)))


def hellinger_cat(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """hellinger_distance, categorical branch: from shares per category."""
    ref = ref_counts / ref_counts.sum()
    cur = cur_counts / cur_counts.sum()
    return _hellinger(float(np.sum(np.sqrt(ref * cur))))


def hellinger_num(ref_sorted: np.ndarray, cur_sorted: np.ndarray, n_unique: int) -> float:
    """hellinger_distance, numerical branch: Sturges bins over the *distinct* values of both."""
    lo = min(ref_sorted[0], cur_sorted[0])
    hi = max(ref_sorted[-1], cur_sorted[-1])
    edges = sturges_edges(lo, hi, n_unique)
    widths = np.diff(edges).astype(float)
    h_ref = histogram_sorted(ref_sorted, edges)
    h_cur = histogram_sorted(cur_sorted, edges)
    d_ref = h_ref / widths / h_ref.sum()  # np.histogram(density=True)
    d_cur = h_cur / widths / h_cur.sum()
    bin_width = (edges.max() - edges.min()) / (len(edges) - 1)
    return _hellinger(float(np.sum(np.sqrt(d_ref * d_cur) * bin_width)))


def _w1_pieces(x: np.ndarray, y: np.ndarray, ceil: bool) -> float:
    """Sum over x's quantile steps of |x_k - y_j| * width: the pieces of [0, 1) that start at
    one of x's steps k/n, paired with y's step j covering them, widths in units of 1/(n*m).
    Ties between the two grids go to the reference (``ceil``): there, width 0."""
    n, m = len(x), len(y)
    total = 0.0
    for start in range(0, n, _W1_BLOCK):  # in blocks: temporaries stay in cache
        k = np.arange(start, min(n, start + _W1_BLOCK), dtype=np.int64)
        km = k * m
        j = (km + (n - 1)) // n - 1 if ceil else km // n  # y's step under x's k-th start
        width = (j + 1) * n
        np.minimum(width, km + m, out=width)  # up to y's next step or x's, whichever first
        width -= km
        gaps = y[j]  # j = -1 only at k = 0 with ceil, where the width is 0
        gaps -= x[start:start + len(k)]
        np.abs(gaps, out=gaps)
        gaps *= width  # not np.dot: BLAS threads stall when the cores are busy
        total += float(gaps.sum())
    return total


def wasserstein_norm(ref_sorted: np.ndarray, cur_sorted: np.ndarray, ref_std: float) -> float:
    """wasserstein_distance_norm: scipy's W1(ref, cur) / max(std(ref), 0.001).

    scipy integrates |F_ref - F_cur| over the merged values, which needs the samples merged
    (a search per value). W1 is also the integral over t in [0, 1) of |Q_ref(t) - Q_cur(t)|,
    both quantile functions step functions with steps at k/n and l/m: which steps pair up is
    integer arithmetic on the two sizes, so W1 is two linear passes over the sorted arrays.
    """
    n, m = len(ref_sorted), len(cur_sorted)
    if n == m:  # the steps coincide: the mean gap between order statistics
        distance = float(np.mean(np.abs(cur_sorted - ref_sorted)))
    else:
        pieces = _w1_pieces(ref_sorted, cur_sorted, True)
        pieces += _w1_pieces(cur_sorted, ref_sorted, False)
        distance = pieces / (float(n) * float(m))
    return distance / max(ref_std, 0.001)


def ks_pvalue(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> float:
    """ks_stattest: scipy.stats.ks_2samp(ref, cur).pvalue.

    Up to KS_EXACT_MAX_N values a side scipy computes the exact distribution (cheap at that
    size, and it may warn and fall back), so scipy itself runs. Above, D comes from two sorted
    searches instead of scipy's four over the pooled values, and the p-value from the same
    asymptotic distribution.
    """
    from scipy import stats  # heavy import, only for this test

    n, m = len(ref_sorted), len(cur_sorted)
    if max(n, m) <= KS_EXACT_MAX_N:
        return float(stats.ks_2samp(ref_sorted, cur_sorted).pvalue)
    # The ECDF difference peaks at a data point: F_ref - F_cur at a reference value,
    # F_cur - F_ref at a current one; same operands as scipy, so the same D bit for bit.
    cur_below = cur_sorted.searchsorted(ref_sorted, "right")
    ref_below = ref_sorted.searchsorted(cur_sorted, "right")
    max_s = max(0.0, float(np.max(np.arange(1, n + 1) / n - cur_below / m)))
    min_s = min(0.0, float(np.min(ref_below / n - np.arange(1, m + 1) / m)))
    min_s = float(np.clip(-min_s, 0, 1))
    d = min_s if min_s > max_s else max_s
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0, 1))


def chisquare_pvalue(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """chisquare_stattest: scipy.stats.chisquare(cur, ref scaled to cur's size)."""
    k_norm = int(cur_counts.sum()) / int(ref_counts.sum())
    expected = ref_counts * k_norm
    with np.errstate(divide="ignore", invalid="ignore"):  # a category new in cur: p = 0
        stat = np.sum((cur_counts.astype(np.float64) - expected) ** 2 / expected)
    from scipy import special

    return float(special.chdtrc(len(ref_counts) - 1, stat))


def z_pvalue(ref_counts: np.ndarray, cur_counts: np.ndarray, first: int) -> float:
    """z_stattest: two-proportion z-test of 'not the smallest key' (key index ``first``)."""
    ref_present = np.flatnonzero(ref_counts)
    cur_present = np.flatnonzero(cur_counts)
    if len(ref_present) == 1 and len(cur_present) == 1 and ref_present[0] == cur_present[0]:
        return 1.0
    n1, n2 = int(ref_counts.sum()), int(cur_counts.sum())
    p1 = float(n1 - int(ref_counts[first])) / n1
    p2 = float(n2 - int(cur_counts[first])) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    from scipy import special

    return float(2 * (1 - special.ndtr(np.abs(z))))


def _first_seen(codes: np.ndarray, distinct: int) -> list[int]:
    """The ``distinct`` codes of ``codes`` in order of first appearance (pandas' unique())."""
    size = 64
    while True:  # the labels nearly always all show up early: look at a growing prefix
        seen, first = np.unique(codes[:size], return_index=True)
        if len(seen) >= distinct or size >= len(codes):
            return [int(v) for v in seen[np.argsort(first)]]
        size *= 8


def tvd_pvalue(ref_codes: np.ndarray, cur_codes: np.ndarray, labels: Sequence[str]) -> float:
    """tvd_stattest: permutation test of the total variation distance, 1000 shuffles.

    Evidently seeds numpy's global RNG with 0 and draws ``np.random.choice(ref + cur, len(ref),
    replace=False)``: the first len(ref) items of a legacy shuffle of the pooled values in row
    order, so shuffling the pooled codes with RandomState(0) draws the very same samples. Its
    distances are summed in the iteration order of a Python set of the labels, and a permuted
    distance that ties the observed one in exact arithmetic counts or not by that rounding
    (so its p-value depends on PYTHONHASHSEED). The same sets and sums are formed here, which
    gives Evidently's result in the same process.
    """
    n_keys, n_ref = len(labels), len(ref_codes)
    index = {label: i for i, label in enumerate(labels)}
    pooled = np.concatenate((ref_codes, cur_codes)).astype(np.int64)
    total = np.bincount(pooled, minlength=n_keys)
    pooled_seen = _first_seen(pooled, int(np.count_nonzero(total)))  # Counter(ref + cur)'s order

    def distance(ref_counts: np.ndarray, ref_seen: list[int], cur_seen: list[int]) -> float:
        # Built by insertions in Evidently's order: the same table, so the same iteration.
        keys = list({labels[i] for i in ref_seen} | {labels[i] for i in cur_seen})
        order = [index[key] for key in keys]
        ref, cur = ref_counts[order], (total - ref_counts)[order]
        return float(0.5 * np.sum(np.abs(ref / ref.sum() - cur / cur.sum())))

    ref_counts = np.bincount(ref_codes, minlength=n_keys)
    observed = distance(ref_counts, _first_seen(ref_codes, int(np.count_nonzero(ref_counts))),
                        _first_seen(cur_codes, int(np.count_nonzero(total - ref_counts))))
    rng = np.random.RandomState(0)
    hits = 0
    for _ in range(TVD_ITERATIONS):
        shuffled = pooled.copy()
        rng.shuffle(shuffled)
        part = shuffled[:n_ref]
        counts = np.bincount(part, minlength=n_keys)
        left = total - counts  # what Counter subtraction leaves, in the pooled Counter's order
        hits += observed <= distance(counts, _first_seen(part, int(np.count_nonzero(counts))),
                                     [i for i in pooled_seen if left[i] > 0])
    return hits / TVD_ITERATIONS


def evidently_test(method: str, ref: pd.Series, cur: pd.Series, kind: ColumnKind,
                   threshold: float | None) -> tuple[float, bool, float]:
    """Evidently's own function for a method not reimplemented here: (score, drifted,
    threshold), its StatTest's default threshold when none is given. Imports evidently."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    result = get_stattest(ref, cur, column_type, method)(ref, cur, column_type, threshold)
    return float(result.drift_score), bool(result.drifted), float(result.actual_threshold)
