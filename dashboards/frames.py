"""Pure shaping: the store's typed rows into the small frames the pages show and chart.

No Streamlit, no I/O: every function takes rows or frames and returns a frame, so that
tests call them directly. Times stay timezone-aware UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from monitor.results import CheckRun, DriftResult, PerformanceResult
from monitor.store.flags import FallbackEvent
from monitor.store.history import Figure, WindowRun

__all__ = [
    "P_VALUE_METHODS",
    "STATUS_RANK",
    "binned_distribution",
    "bucket_features",
    "feature_matrix",
    "flag_marks",
    "relative_score",
    "status_rank",
    "window_table",
]

# Worst first: the overview sorts by this; a model without runs sits between warn and ok.
STATUS_RANK = {"critical": 5, "error": 4, "warn": 3, "no runs": 2, "insufficient_data": 1,
               "ok": 0}

# Drift methods whose score is a p-value (drift below the threshold); every other method's
# score is a distance (drift at or above it). Evidently 0.7's declarations; the native ones
# are checked against monitor.checks.stattests by the tests.
P_VALUE_METHODS = frozenset({
    "ks", "chisquare", "z", "TVD", "t_test", "mannw", "anderson", "cramer_von_mises", "es",
    "fisher_exact", "g_test", "empirical_mmd",
})

# Whole-window figures a model page draws, by (check, metric).
WINDOW_METRICS = (
    ("run", "rows"),
    ("schema", "violation_rate"), ("schema", "missing_columns"),
    ("schema", "unexpected_columns"),
    ("drift", "share_drifted"), ("drift", "dataset_drift"),
    ("performance", "accuracy"), ("performance", "f1"), ("performance", "roc_auc"),
    ("performance", "mae"), ("performance", "rmse"),
    ("performance", "accuracy_drop"), ("performance", "f1_drop"),
    ("performance", "roc_auc_drop"), ("performance", "mae_drop"), ("performance", "rmse_drop"),
    ("performance", "label_coverage"), ("performance", "mature"),
    ("performance", "estimated_accuracy"),
    ("service", "error_rate"), ("service", "latency_p50_ms"), ("service", "latency_p95_ms"),
    ("service", "latency_p99_ms"), ("service", "throughput_per_s"),
    ("service", "fallback_rate"),
)
FEATURE_METRICS = ("score", "drifted", "null_rate_change", "unseen_share")
PERFORMANCE_METRICS = ("accuracy", "f1", "roc_auc", "mae", "rmse")


def status_rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "no runs", STATUS_RANK["no runs"])


def relative_score(score: float | None, threshold: float | None, method: str | None
                   ) -> float | None:
    """A drift score against its threshold on one scale, 1 at the threshold and larger
    when further into drift: ``score / threshold`` for distances, ``log p / log threshold``
    for p-values (0 at p = 1). None when the column was not tested."""
    if score is None or threshold is None or method is None:
        return None
    if not (math.isfinite(score) and math.isfinite(threshold)) or threshold <= 0:
        return None
    if method in P_VALUE_METHODS:
        if threshold >= 1:
            return None
        return math.log(max(score, 1e-300)) / math.log(threshold)
    return score / threshold


def _times(runs: Sequence[WindowRun]) -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": [r.id for r in runs],
        "window_start": pd.to_datetime([r.window_start for r in runs], utc=True),
        "window_end": pd.to_datetime([r.window_end for r in runs], utc=True),
        "status": [r.status for r in runs],
        "rows": [r.rows for r in runs],
    })


def window_table(runs: Sequence[WindowRun], figures: Iterable[Figure],
                 settings: Mapping[tuple[str, str | None], CheckRun]) -> pd.DataFrame:
    """One row per window, oldest first: the run, its whole-window figures (one column per
    metric name, NaN where absent), and what each window was judged against:
    ``drift_share_limit`` and ``reference_<metric>`` from the window's settings."""
    frame = _times(runs)
    by_run: dict[int, dict[str, float | None]] = {}
    for fig in figures:
        if fig.feature == "" and fig.check != "run":
            by_run.setdefault(fig.run_id, {})[fig.metric] = fig.value
    names = [metric for check, metric in WINDOW_METRICS if check != "run"]
    for name in names:
        frame[name] = np.array([_num(by_run.get(r.id, {}).get(name)) for r in runs],
                               dtype=float)
    limits, references = [], {m: [] for m in PERFORMANCE_METRICS}
    for run in runs:
        typed = settings.get((run.config_hash, run.reference_version))
        drift = typed.section("drift") if typed is not None else None
        limits.append(drift.drift_share if isinstance(drift, DriftResult) else np.nan)
        perf = typed.section("performance") if typed is not None else None
        ref = perf.reference_metrics if isinstance(perf, PerformanceResult) else {}
        for metric in PERFORMANCE_METRICS:
            references[metric].append(_num(ref.get(metric)))
    frame["drift_share_limit"] = np.array(limits, dtype=float)
    for metric, values in references.items():
        frame[f"reference_{metric}"] = np.array(values, dtype=float)
    return frame


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return float(value) if isinstance(value, bool) else np.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return np.nan
    return number if math.isfinite(number) else np.nan


def feature_matrix(runs: Sequence[WindowRun], figures: Iterable[Figure],
                   settings: Mapping[tuple[str, str | None], CheckRun]) -> pd.DataFrame:
    """One row per (window, feature) that the drift check reported: ``score``,
    ``drifted``, ``null_rate_change``, ``unseen_share`` as stored, the ``method`` and
    ``threshold`` of the window's settings, and ``relative`` (``relative_score``)."""
    cells: dict[tuple[int, str], dict[str, float | None]] = {}
    for fig in figures:
        if fig.check == "drift" and fig.feature:
            cells.setdefault((fig.run_id, fig.feature), {})[fig.metric] = fig.value
    by_id = {r.id: r for r in runs}
    tests: dict[tuple[str, str | None], dict[str, tuple[str | None, float | None]]] = {}
    for key, typed in settings.items():
        drift = typed.section("drift")
        if isinstance(drift, DriftResult):
            tests[key] = {f.feature: (f.method, f.threshold) for f in drift.features}
    rows = []
    for (run_id, feature), values in cells.items():
        run = by_id.get(run_id)
        if run is None:
            continue
        method, threshold = tests.get((run.config_hash, run.reference_version), {}).get(
            feature, (None, None))
        score = values.get("score")
        rows.append((run_id, run.window_start, run.window_end, feature, _num(score),
                     bool(values.get("drifted") or 0), _num(values.get("null_rate_change")),
                     _num(values.get("unseen_share")), method, _num(threshold),
                     _num(relative_score(score, threshold, method))))
    columns = ["run_id", "window_start", "window_end", "feature", "score", "drifted",
               "null_rate_change", "unseen_share", "method", "threshold", "relative"]
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("window_start", "window_end"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame.sort_values(["window_end", "feature"], ignore_index=True)


def bucket_features(matrix: pd.DataFrame, max_columns: int) -> pd.DataFrame:
    """The feature matrix with at most ``max_columns`` time columns: consecutive windows
    are grouped, and each (group, feature) cell keeps the most drifted window's figures
    (largest ``relative``), how many windows it covers (``windows``) and how many of them
    drifted (``drifted_windows``). Without grouping each cell covers one window."""
    if matrix.empty:
        return matrix.assign(windows=pd.Series(dtype=int), drifted_windows=pd.Series(dtype=int))
    ends = np.sort(matrix["window_end"].unique())
    size = max(1, math.ceil(len(ends) / max(1, max_columns)))
    group_of = pd.Series(np.arange(len(ends)) // size, index=pd.DatetimeIndex(ends))
    frame = matrix.assign(group=group_of.loc[matrix["window_end"].to_numpy()].to_numpy())
    frame["drifted_int"] = frame["drifted"].astype(int)
    order = frame["relative"].fillna(-1.0)
    frame = frame.assign(_order=order).sort_values(["group", "feature", "_order"])
    top = frame.groupby(["group", "feature"], sort=False).tail(1).set_index(["group", "feature"])
    spans = frame.groupby(["group", "feature"]).agg(
        window_start=("window_start", "min"), window_end=("window_end", "max"),
        windows=("run_id", "size"), drifted_windows=("drifted_int", "sum"))
    out = top.drop(columns=["window_start", "window_end", "drifted_int", "_order"]).join(spans)
    out["drifted"] = out["drifted_windows"] > 0
    return out.reset_index().drop(columns=["group"]).sort_values(
        ["window_end", "feature"], ignore_index=True)


def flag_marks(events: Iterable[FallbackEvent], since: datetime | None, until: datetime | None
               ) -> pd.DataFrame:
    """Flag changes placed on the windows' time axis: an automatic change at the end of
    the window whose verdict moved it (the newest run it cites), a manual change or an
    expiry when it happened. Only those inside [since, until]; oldest first."""
    rows = []
    for event in events:
        at = event.at
        if event.kind == "auto":
            ends = [r.get("window_end") for r in (event.details or {}).get("runs", [])]
            ends = [e for e in ends if isinstance(e, str)]
            if ends:
                at = max(datetime.fromisoformat(e.replace("Z", "+00:00")) for e in ends)
        if (since is not None and at < since) or (until is not None and at > until):
            continue
        state = "on" if event.new_active else "off"
        who = f" by {event.actor}" if event.actor else ""
        rows.append((pd.Timestamp(at), f"flag {state} ({event.kind})", state, event.kind,
                     (event.reason or "") + who, pd.Timestamp(event.at)))
    frame = pd.DataFrame(rows, columns=["time", "label", "state", "kind", "reason",
                                        "recorded_at"])
    for col in ("time", "recorded_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame.sort_values("time", ignore_index=True)


def _numbers(values: pd.Series) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
        dtype=float, na_value=np.nan)
    return numbers[np.isfinite(numbers)]


def binned_distribution(reference: pd.Series, current: pd.Series, kind: str, *,
                        bins: int = 30, top: int = 20) -> pd.DataFrame:
    """Both samples as shares per bin (numbers: common equal-width bins over both; values
    that are not numbers are left out) or per category (the ``top`` most frequent over
    both, the rest as "(other)"; missing values as "(null)"). Columns: ``bin`` (label),
    ``order``, ``start``/``end`` (numbers only), ``sample`` (reference/current), ``share``,
    ``count``."""
    rows = []
    if kind == "num":
        ref, cur = _numbers(reference), _numbers(current)
        both = np.concatenate([ref, cur])
        if both.size == 0:
            return pd.DataFrame(columns=["bin", "order", "start", "end", "sample", "share",
                                         "count"])
        lo, hi = float(both.min()), float(both.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for name, values in (("reference", ref), ("current", cur)):
            counts, _ = np.histogram(values, bins=edges)
            total = max(int(counts.sum()), 1)
            for i, count in enumerate(counts):
                rows.append((f"{edges[i]:.4g}", i, float(edges[i]), float(edges[i + 1]), name,
                             count / total, int(count)))
        return pd.DataFrame(rows, columns=["bin", "order", "start", "end", "sample", "share",
                                           "count"])
    labels = {name: pd.Series(values, dtype=object).map(
        lambda v: "(null)" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        for name, values in (("reference", reference), ("current", current))}
    frequent = pd.concat(labels.values()).value_counts()
    keep = list(frequent.index[:top])
    for name, values in labels.items():
        values = values.where(values.isin(keep), "(other)")
        counts = values.value_counts()
        total = max(int(counts.sum()), 1)
        for order, label in enumerate([*keep, "(other)"]):
            if label == "(other)" and label not in counts:
                continue
            count = int(counts.get(label, 0))
            rows.append((label, order, np.nan, np.nan, name, count / total, count))
    return pd.DataFrame(rows, columns=["bin", "order", "start", "end", "sample", "share",
                                       "count"])
