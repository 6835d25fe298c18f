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

from monitor.results import (
    SEGMENT_STATUS_LEVEL,
    CheckRun,
    DriftResult,
    EstimatedLossResult,
    EstimatedResult,
    PerformanceResult,
    SchemaResult,
    SegmentsResult,
    VersionsResult,
)
from monitor.rollback import VersionSummary, VersionWindow
from monitor.store.flags import FallbackEvent
from monitor.store.history import BucketFigure, Figure, WindowFigures, WindowRun

__all__ = [
    "P_VALUE_METHODS",
    "STATUS_RANK",
    "binned_distribution",
    "bucket_bounds",
    "estimated_table",
    "feature_cells",
    "flag_marks",
    "overview_frames",
    "relative_score",
    "run_versions",
    "segment_cells",
    "segment_table",
    "status_rank",
    "version_table",
    "version_windows",
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

# Whole-window figures a model page draws (and only those: each costs a read per
# window), by (check, metric); each metric name is a column of ``window_table``.
WINDOW_FIGURES = (
    ("schema", "violation_rate"),
    ("drift", "share_drifted"), ("drift", "dataset_drift"),
    ("performance", "accuracy"), ("performance", "f1"), ("performance", "roc_auc"),
    ("performance", "mae"), ("performance", "rmse"),
    ("performance", "label_coverage"), ("performance", "mature"),
    ("performance", "estimated_accuracy"),
    ("performance", "estimated_accuracy_lower"), ("performance", "estimated_accuracy_upper"),
    # The other estimates charted beside their realized metric (CheckRun.metrics).
    *(("performance", f"estimated_{m}{part}") for m in ("f1", "roc_auc", "mae", "rmse")
      for part in ("", "_lower", "_upper")),
    ("service", "error_rate"), ("service", "latency_p50_ms"), ("service", "latency_p95_ms"),
    ("service", "latency_p99_ms"), ("service", "fallback_rate"),
    ("multivariate", "auc"), ("multivariate", "auc_lower"), ("multivariate", "auc_upper"),
    ("multivariate", "auc_threshold"),
)
PERFORMANCE_METRICS = ("accuracy", "f1", "roc_auc", "mae", "rmse")


def estimated_table(perf: PerformanceResult) -> pd.DataFrame:
    """The run page's estimates without labels: one row per estimated metric with its band
    (3 sampling errors), the reference's realized value and the window's once labelled."""
    est = perf.estimated
    columns = ["metric", "estimated", "lower", "upper", "sampling_error", "reference",
               "realized"]
    if est is None or est.status == "skipped":
        return pd.DataFrame(columns=columns)
    reference = dict(perf.reference_metrics)
    if isinstance(est, EstimatedResult):
        reference["accuracy"] = est.reference_accuracy
    elif isinstance(est, EstimatedLossResult):
        reference |= est.reference_metrics
    rows = [(name, _num(value), _num(est.lower_bounds.get(name)),
             _num(est.upper_bounds.get(name)), _num(est.sampling_errors.get(name)),
             _num(reference.get(name)), _num(perf.metrics.get(name)) if perf.labelled_rows
             else np.nan)
            for name, value in est.metrics.items()]
    return pd.DataFrame(rows, columns=columns)


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


def window_table(runs: Sequence[WindowRun], figures: Iterable[WindowFigures],
                 settings: Mapping[tuple[str, str | None], CheckRun]) -> pd.DataFrame:
    """One row per window, oldest first: the run, its whole-window figures (one column per
    metric of ``WINDOW_FIGURES``, NaN where absent), and what each window was judged
    against: ``drift_share_limit`` and ``reference_<metric>`` from its settings."""
    frame = _times(runs)
    by_run = {f.run_id: f.values for f in figures}
    for pair in WINDOW_FIGURES:
        frame[pair[1]] = np.array([_num(by_run.get(r.id, {}).get(pair)) for r in runs],
                                  dtype=float)
    judged: dict[tuple[str, str | None], list[float]] = {}
    for key, typed in settings.items():
        drift, perf = typed.section("drift"), typed.section("performance")
        ref = perf.reference_metrics if isinstance(perf, PerformanceResult) else {}
        judged[key] = [drift.drift_share if isinstance(drift, DriftResult) else np.nan,
                       *(_num(ref.get(m)) for m in PERFORMANCE_METRICS)]
    nothing = [np.nan] * (1 + len(PERFORMANCE_METRICS))
    rows = np.array([judged.get((r.config_hash, r.reference_version), nothing) for r in runs],
                    dtype=float).reshape(len(runs), 1 + len(PERFORMANCE_METRICS))
    frame["drift_share_limit"] = rows[:, 0]
    for i, metric in enumerate(PERFORMANCE_METRICS, start=1):
        frame[f"reference_{metric}"] = rows[:, i]
    frame["window"] = _window_text(frame)
    return frame


def _window_text(frame: pd.DataFrame) -> np.ndarray:
    """'2026-10-09 00:00 → 2026-10-10 00:00 UTC' per row, formatted by numpy (pandas'
    strftime is 20x slower)."""
    def minutes(values: pd.Series) -> np.ndarray:
        naive = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(
            dtype="datetime64[m]")
        return np.char.replace(np.datetime_as_string(naive, unit="m"), "T", " ")

    if frame.empty:
        return np.empty(0, dtype=object)
    return np.char.add(np.char.add(minutes(frame["window_start"]), " → "),
                       np.char.add(minutes(frame["window_end"]), " UTC")).astype(object)


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return float(value) if isinstance(value, bool) else np.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return np.nan
    return number if math.isfinite(number) else np.nan


def bucket_bounds(runs: Sequence[WindowRun], max_columns: int) -> list[datetime]:
    """Cut the windows (oldest first) into at most ``max_columns`` buckets of consecutive
    windows, as equal as can be; the window end of each bucket's last window."""
    if not runs:
        return []
    size = max(1, math.ceil(len(runs) / max(1, max_columns)))
    return [runs[min(i + size, len(runs)) - 1].window_end for i in range(0, len(runs), size)]


def feature_cells(runs: Sequence[WindowRun], scores: Iterable[BucketFigure],
                  bounds: Sequence[datetime],
                  settings: Mapping[tuple[str, str | None], CheckRun],
                  newest: Iterable[Figure] = ()) -> pd.DataFrame:
    """The heat-map's cells: one row per (bucket of consecutive windows, feature).

    ``scores``: the drift scores summed up per bucket (``history.feature_buckets``); each
    cell keeps its most drifted window's (the largest distance, the smallest p-value),
    ``relative`` to the threshold (``relative_score``; ``drifted`` when at least 1) and how
    many windows it covers. ``newest``: per-feature figures of each bucket's newest window,
    whose ``null_rate_change`` and ``unseen_share`` the cell shows. Method and threshold
    are those of the bucket's newest window."""
    columns = ["window_start", "window_end", "window", "feature", "method", "threshold",
               "score", "relative", "drifted", "windows", "null_rate_change", "unseen_share"]
    if not runs or not bounds:
        return pd.DataFrame(columns=columns)
    tests: dict[tuple[str, str | None], dict[str, tuple[str | None, float | None]]] = {}
    for key, typed in settings.items():
        drift = typed.section("drift")
        if isinstance(drift, DriftResult):
            tests[key] = {f.feature: (f.method, f.threshold) for f in drift.features}
    spans: list[tuple[datetime, datetime, int, WindowRun] | None] = []
    index = 0
    for bound in sorted(bounds):
        first = index
        while index < len(runs) and runs[index].window_end <= bound:
            index += 1
        spans.append((runs[first].window_start, runs[index - 1].window_end, index - first,
                      runs[index - 1]) if index > first else None)
    extra: dict[tuple[int, str], dict[str, float | None]] = {}
    for fig in newest:
        extra.setdefault((fig.run_id, fig.feature), {})[fig.metric] = fig.value
    rows = []
    for fig in scores:
        if fig.metric != "score" or fig.bucket >= len(spans):
            continue
        span = spans[fig.bucket]
        if span is None:
            continue
        start, end, windows, last = span
        method, threshold = tests.get((last.config_hash, last.reference_version), {}).get(
            fig.feature, (None, None))
        score = fig.min if method in P_VALUE_METHODS else fig.max
        relative = relative_score(score, threshold, method)
        shown = extra.get((last.id, fig.feature), {})
        rows.append((start, end, fig.feature, method, _num(threshold), _num(score),
                     _num(relative), relative is not None and relative >= 1.0, windows,
                     _num(shown.get("null_rate_change")), _num(shown.get("unseen_share"))))
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "window"])
    for col in ("window_start", "window_end"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame = frame.sort_values(["window_end", "feature"], ignore_index=True)
    frame.insert(2, "window", _window_text(frame))
    return frame


_LEVEL_STATUS = {level: status for status, level in SEGMENT_STATUS_LEVEL.items()}


def segment_cells(runs: Sequence[WindowRun], levels: Iterable[BucketFigure],
                  bounds: Sequence[datetime]) -> pd.DataFrame:
    """The segment strip's cells: one row per (bucket of consecutive windows, segment),
    the worst status of the segment in the bucket's windows. ``levels``: the segments'
    ``status_level`` figures summed up per bucket (``history.feature_buckets`` with check
    ``segments``)."""
    columns = ["window_start", "window_end", "window", "segment", "status", "windows"]
    spans: list[tuple[datetime, datetime] | None] = []
    index = 0
    for bound in sorted(bounds):
        first = index
        while index < len(runs) and runs[index].window_end <= bound:
            index += 1
        spans.append((runs[first].window_start, runs[index - 1].window_end)
                     if index > first else None)
    rows = []
    for fig in levels:
        if fig.metric != "status_level" or fig.bucket >= len(spans) or fig.max is None:
            continue
        span = spans[fig.bucket]
        if span is not None:
            rows.append((*span, fig.feature, _LEVEL_STATUS.get(fig.max, "ok"), fig.count))
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "window"])
    for col in ("window_start", "window_end"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame = frame.sort_values(["window_end", "segment"], ignore_index=True)
    frame.insert(2, "window", _window_text(frame))
    return frame


def segment_table(segments: SegmentsResult) -> pd.DataFrame:
    """One row per segment of a run: its verdict, figures and what it was compared
    with."""
    rows = []
    for seg in segments.segments:
        drift = seg.drift if isinstance(seg.drift, DriftResult) else None
        schema = seg.schema if isinstance(seg.schema, SchemaResult) else None
        perf = seg.performance if isinstance(seg.performance, PerformanceResult) else None
        est = perf.estimated if perf is not None else None
        versus = ("" if seg.status == "insufficient_data" else
                  f"segment ({seg.reference_rows:,} rows)" if seg.reference == "segment"
                  else "whole reference")
        rows.append({
            "segment": seg.key, "rows": seg.rows, "status": seg.status,
            "drifted share": drift.share_drifted if drift else None,
            "violations": schema.violation_rate if schema else None,
            "accuracy": perf.metrics.get("accuracy") if perf else None,
            "estimated accuracy": est.estimated_accuracy if est else None,
            "reference": versus,
            "why": "; ".join(seg.reasons[:3]) or (seg.reference_note or ""),
        })
    return pd.DataFrame(rows, columns=["segment", "rows", "status", "drifted share",
                                       "violations", "accuracy", "estimated accuracy",
                                       "reference", "why"])


# Whole-window figures the overview shows per model: (check, metric) -> its name there.
# "performance" is a classifier's accuracy or a regressor's MAE (``performance_metric``
# says which), "estimated" its estimate before labels.
OVERVIEW_FIGURES = (("drift", "share_drifted"), ("performance", "accuracy"),
                    ("performance", "mae"), ("performance", "estimated_accuracy"),
                    ("performance", "estimated_mae"), ("schema", "violation_rate"))
_OVERVIEW_NAMES = {"drifted": (("drift", "share_drifted"),),
                   "performance": (("performance", "accuracy"), ("performance", "mae")),
                   "estimated": (("performance", "estimated_accuracy"),
                                 ("performance", "estimated_mae")),
                   "violations": (("schema", "violation_rate"),)}


def overview_frames(models: Sequence[str], recent: Mapping[str, Sequence[WindowRun]],
                    successes: Mapping[str, WindowRun], flags: Mapping[str, Mapping[str, Any]],
                    figures: Iterable[Figure], notes: Mapping[str, str], *, slots: int
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The overview: one row per model, worst first (the flag on, then the status, then a
    stale flag; then by name), and the strip of their recent windows.

    ``recent``: each model's newest windows, newest first (``history.recent_windows``);
    ``flags``: flag documents; ``figures``: those windows' ``OVERVIEW_FIGURES``, shown as
    ``<name>_latest`` and ``<name>_trend`` (oldest first); ``notes``: what to say about a
    model without runs. The strip's ``slot`` runs to ``slots`` (the newest window)."""
    values = {(f.run_id, f.check, f.metric): f.value for f in figures}
    rows, strip = [], []
    for model in models:
        runs = list(recent.get(model, ()))
        latest = runs[0] if runs else None
        flag = flags[model]
        success = successes.get(model)
        if latest is None:
            note = notes.get(model, "no check runs yet")
        elif latest.rows == 0:
            note = "no logs in the latest window"
        else:
            note = ""
        status = latest.status if latest else "no runs"
        oldest_first = runs[::-1]
        trends, metric_of = {}, {}
        for name, choices in _OVERVIEW_NAMES.items():
            # The first of the choices the model has figures of (accuracy, else MAE).
            for check, metric in choices:
                trend = [_finite(values.get((r.id, check, metric))) for r in oldest_first]
                if any(v is not None for v in trend) or (check, metric) == choices[-1]:
                    break
            trends[name] = trend
            metric_of[name] = metric if any(v is not None for v in trend) else None
        rows.append({
            "model": model, "status": status,
            "window_end": latest.window_end if latest else None,
            "rows": latest.rows if latest else None,
            "run_id": latest.id if latest else None,
            "fallback": "ON" if flag["active"] else "off", "source": flag["source"],
            "since": flag["since"], "reason": flag["reason"],
            "expires_at": flag["expires_at"], "stale": bool(flag["stale"]),
            "last_success": success.finished_at if success else None,
            "note": note, "performance_metric": metric_of["performance"] or "",
            **{f"{name}_latest": trend[-1] if trend else None
               for name, trend in trends.items()},
            **{f"{name}_trend": trend for name, trend in trends.items()},
            "_rank": (100 * int(bool(flag["active"])) + 10 * status_rank(status)
                      + int(bool(flag["stale"]))),
        })
        for slot, run in enumerate(oldest_first, start=slots - len(runs) + 1):
            strip.append((model, slot, run.id, run.window_start, run.window_end, run.status,
                          run.rows))
    table = pd.DataFrame(rows)
    if len(table):
        table = (table.sort_values(["_rank", "model"], ascending=[False, True])
                 .drop(columns=["_rank"]).reset_index(drop=True))
        for col in ("window_end", "last_success"):
            table[col] = pd.to_datetime(table[col], utc=True)
    strip_frame = pd.DataFrame(strip, columns=["model", "slot", "run_id", "window_start",
                                               "window_end", "status", "rows"])
    for col in ("window_start", "window_end"):
        strip_frame[col] = pd.to_datetime(strip_frame[col], utc=True)
    return table, strip_frame


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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


def version_table(versions: Sequence[VersionSummary]) -> pd.DataFrame:
    """One row per model version (first seen first): when it served and its figures."""
    columns = ["version", "first_seen", "last_seen", "windows", "rows", "accuracy",
               "estimated_accuracy", "error_rate", "latency_p95_ms", "prediction_drift"]
    rows = [{"version": v.version, "first_seen": v.first_seen, "last_seen": v.last_seen,
             "windows": v.windows, "rows": v.rows, "accuracy": v.accuracy,
             "estimated_accuracy": v.estimated_accuracy, "error_rate": v.error_rate,
             "latency_p95_ms": v.latency_p95_ms,
             "prediction_drift": (f"{v.prediction_drifted_windows} of "
                                  f"{v.prediction_tested_windows} windows"
                                  if v.prediction_tested_windows else "-")}
            for v in versions]
    return pd.DataFrame(rows, columns=columns)


def version_windows(rows: Iterable[VersionWindow]) -> pd.DataFrame:
    """One row per (window, version): its rows and accuracy, realized (mature windows
    only) and estimated, for a chart of the versions side by side."""
    out = [{"window_start": r.window_start, "window_end": r.window_end,
            "version": r.version, "rows": r.figure("rows"),
            "accuracy": r.figures.get("accuracy") if r.mature else None,
            "estimated_accuracy": r.figures.get("estimated_accuracy")} for r in rows]
    columns = ["window_start", "window_end", "version", "rows", "accuracy",
               "estimated_accuracy"]
    frame = pd.DataFrame(out, columns=columns)
    for name in ("accuracy", "estimated_accuracy", "rows"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame


def run_versions(section: VersionsResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run's versions section: a row per version (most rows first) and a row per pair
    compared (``better`` empty: no significant difference)."""
    versions = pd.DataFrame([{
        "version": v.version, "rows": v.rows, "error_rate": v.error_rate,
        "latency_p95_ms": v.latency_p95_ms, "labelled_rows": v.labelled_rows,
        "accuracy": v.accuracy, "estimated_accuracy": v.estimated_accuracy,
        "prediction_drift_score": v.prediction_drift_score,
        "prediction_drifted": v.prediction_drifted,
    } for v in section.versions], columns=[
        "version", "rows", "error_rate", "latency_p95_ms", "labelled_rows", "accuracy",
        "estimated_accuracy", "prediction_drift_score", "prediction_drifted"])
    pairs = pd.DataFrame([{
        "a": c.a, "b": c.b, "basis": c.basis, "value_a": c.value_a, "value_b": c.value_b,
        "p_value": c.p_value, "better": c.better or "",
    } for c in section.comparisons], columns=["a", "b", "basis", "value_a", "value_b",
                                              "p_value", "better"])
    return versions, pairs
