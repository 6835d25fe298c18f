"""Accuracy decay: realized metrics on the labelled rows of a window against the reference.

Labels arrive late, so a window is judged only once it is mature: enough of its
rows carry a label, or it is old enough that the missing labels are not coming.
Class labels are compared as text (see ``label_text``), coded once (``ClassRows``).
Metrics are computed with numpy; the tests hold them equal to scikit-learn and Evidently.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from monitor.checks.classes import ClassRows
from monitor.config import PerformanceConfig
from monitor.results import PerformanceResult
from monitor.schema import ModelSchema, label_of

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "PerformanceResult",
    "check_performance",
    "class_names",
    "pairs_auc",
    "performance_metrics",
]

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse")
_RELATIVE = frozenset(REGRESSION_METRICS)  # error metrics: worsening measured relative to ref
# A drop equal to the allowance must not turn critical through float noise (0.84 - 0.79).
_EPS = 1e-12

Status = Literal["ok", "warn", "critical", "skipped"]


def class_names(schema: ModelSchema) -> list[str]:
    """The model's classes as text, in contract order (the last one is the positive class)."""
    pred = schema.prediction
    if pred is None:  # a features-only model has no classes
        return []
    if pred.classes:
        return [label_of(c) for c in pred.classes]
    return list(pred.probability_columns)


def positive_rank_sum(positive: np.ndarray, scores: np.ndarray) -> float:
    """The sum of the positive rows' 1-based ranks among ``scores`` (finite), ties
    sharing their mean rank (``scipy.stats.rankdata``'s average ranks, summed over
    ``positive``).

    A positive row whose score has ``below`` scores under it and ``upto`` at or under
    it has the mean rank (below + upto + 1) / 2: those counts come from two sorts (of
    every score and of the positives' alone) and two binary searches, not an argsort
    (an indirect sort: 86 against 64 ms on a million distinct scores). The counts are
    summed as ints and halved once: exact (the total is far below 2**52)."""
    if not len(scores):
        return 0.0
    ordered = np.sort(scores)
    mine = np.sort(scores[positive])
    total = int(np.searchsorted(ordered, mine, side="left").sum()) \
        + int(np.searchsorted(ordered, mine, side="right").sum())
    return (total + len(mine)) / 2.0


def pairs_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic; None unless both outcomes occur."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = positive_rank_sum(positive, scores)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _f1(rows: ClassRows, cls: int) -> float | None:
    predicted, actual = rows.pred == cls, rows.label == cls
    tp = int(np.count_nonzero(predicted & actual))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = int(np.count_nonzero(actual)) - tp
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else None


def _roc_auc(rows: ClassRows, proba: pd.DataFrame | None, classes: list[str]
             ) -> float | None:
    if proba is None or len(classes) < 2:
        return None
    if len(classes) == 2:
        if classes[-1] not in proba.columns:
            return None
        scores = proba[classes[-1]].to_numpy(dtype=float)
        ok = np.isfinite(scores)
        return pairs_auc(rows.label[ok] == rows.code(classes[-1]), scores[ok])
    if not set(classes) <= set(proba.columns):
        return None
    matrix = proba[classes].to_numpy(dtype=float)
    ok = np.isfinite(matrix).all(axis=1)
    label = rows.label[ok]
    # One-vs-rest macro over the classes that have both outcomes in the window.
    aucs = [pairs_auc(label == rows.code(c), matrix[ok, i]) for i, c in enumerate(classes)]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def _classification(rows: ClassRows, proba: pd.DataFrame | None,
                    classes: list[str]) -> dict[str, float | None]:
    """The metrics of labelled rows (every row has a prediction and a label)."""
    if not len(rows):
        return dict.fromkeys(CLASSIFICATION_METRICS)
    seen = rows.present()
    if not classes:
        classes = sorted(seen)
    if len(classes) == 2:
        f1 = _f1(rows, rows.code(classes[-1]))
    else:
        # Macro over the contract's classes seen in labels or predictions (sklearn's
        # default set, minus unknown labels: those are just wrong predictions).
        scores = [_f1(rows, rows.code(c)) for c in classes if c in seen]
        f1 = float(np.mean(np.array(scores, dtype=float))) if scores else None
    return {"accuracy": float(np.mean(rows.pred == rows.label)), "f1": f1,
            "roc_auc": _roc_auc(rows, proba, classes)}


def _regression(predictions: pd.Series, labels: pd.Series) -> dict[str, float | None]:
    pred = pd.to_numeric(predictions, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    true = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(pred) & np.isfinite(true)
    if not ok.any():
        return dict.fromkeys(REGRESSION_METRICS)
    err = pred[ok] - true[ok]
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}


def _pick(probabilities: pd.DataFrame | None, keep: np.ndarray,
          columns: list[str] | None = None) -> pd.DataFrame | None:
    """The probabilities of the rows ``keep`` picks, columns named as text; with
    ``columns`` (texts), only those of them the frame has, each copied once."""
    if probabilities is None:
        return None
    if columns:
        wanted = set(columns)
        return pd.DataFrame({str(c): probabilities[c].to_numpy()[keep]
                             for c in probabilities.columns if str(c) in wanted}, copy=False)
    # The pick is a new object, renamed and renumbered in place (``rename`` and
    # ``reset_index`` copy every value).
    proba = probabilities.iloc[keep]
    proba.columns = pd.Index([str(c) for c in proba.columns], dtype=object)
    proba.index = pd.RangeIndex(len(proba))
    return proba


def _check_lengths(n: int, labels: int, probabilities: pd.DataFrame | None) -> None:
    if labels != n or (probabilities is not None and len(probabilities) != n):
        raise ValueError("predictions, labels and probabilities must have the same length")


def _labelled(predictions: pd.Series, labels: pd.Series
              ) -> tuple[pd.Series, pd.Series, int]:
    """A regressor's rows with a prediction, then those with a label; returns the latter
    and the former count."""
    has_pred = predictions.notna().to_numpy()
    keep = has_pred & labels.notna().to_numpy()
    pred, label = predictions.iloc[keep], labels.iloc[keep]
    pred.index = label.index = pd.RangeIndex(len(pred))
    return pred, label, int(np.count_nonzero(has_pred))


def _labelled_classes(rows: ClassRows, probabilities: pd.DataFrame | None,
                      classes: list[str]) -> tuple[ClassRows, pd.DataFrame | None, int]:
    """``_labelled`` of a classifier's coded rows, with their probabilities: of the
    contract's ``classes``, those columns ROC AUC reads (``_roc_auc``; a binary model's
    positive class alone: the other column's copy was 8 MB per million rows)."""
    keep = rows.labelled
    picked = _pick(probabilities, keep, classes[-1:] if len(classes) == 2 else classes)
    return rows.take(keep), picked, int(np.count_nonzero(rows.has_pred))


def performance_metrics(predictions: pd.Series, labels: pd.Series,
                        probabilities: pd.DataFrame | None,
                        schema: ModelSchema) -> dict[str, float | None]:
    """Realized metrics on the rows that have both a prediction and a label.

    Classification: accuracy, f1 (binary: of the last class; multiclass: macro),
    roc_auc (None without probabilities). Regression: mae, rmse. None where a
    metric is undefined on these rows (no labels; one outcome only for roc_auc).
    """
    _check_lengths(len(predictions), len(labels), probabilities)
    if schema.task == "regression":
        pred, label, _ = _labelled(predictions, labels)
        return _regression(pred, label)
    classes = class_names(schema)
    picked, proba, _ = _labelled_classes(ClassRows.of(predictions, labels), probabilities,
                                         classes)
    return _classification(picked, proba, classes)


def _drop(metric: str, current: float | None, reference: float | None) -> float | None:
    if current is None or reference is None:
        return None
    if metric not in _RELATIVE:
        return reference - current
    if reference == 0:
        return 0.0 if current == 0 else math.inf
    return (current - reference) / reference


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f}d" if abs(hours) >= 48 else f"{hours:.1f}h"


def _exceeded(metric: str, cur: float, ref: float, drop: float, allowed: float) -> str:
    if metric in _RELATIVE:
        return (f"{metric} {cur:.3f} vs reference {ref:.3f}: worse by {drop:.1%}"
                f" > allowed {allowed:.1%}")
    return f"{metric} {cur:.3f} vs reference {ref:.3f}: drop {drop:.3f} > allowed {allowed:.3f}"


def check_performance(
    predictions: pd.Series,
    labels: pd.Series,
    probabilities: pd.DataFrame | None,
    reference_metrics: dict[str, float | None],
    schema: ModelSchema,
    *,
    config: PerformanceConfig,
    window_end: datetime,
    now: datetime,
    classes: ClassRows | None = None,
) -> PerformanceResult:
    """Judge a window's realized metrics against the reference's; pure, no I/O, no clock.

    ``labels`` is aligned with ``predictions`` (null where not arrived yet), and
    ``probabilities`` too (one column per class as text). Rows without a
    prediction are not counted. ``classes``: a classifier's ``predictions`` and ``labels``
    as ``ClassRows.of`` coded them, when the caller has them.
    """
    _check_lengths(len(predictions), len(labels), probabilities)
    metrics: dict[str, float | None]
    if schema.task == "regression":
        pred, label, rows = _labelled(predictions, labels)
        labelled = len(label)
        metrics = _regression(pred, label)
    else:
        coded = classes if classes is not None else ClassRows.of(predictions, labels)
        classes_of = class_names(schema)
        picked, proba, rows = _labelled_classes(coded, probabilities, classes_of)
        labelled = len(picked)
        metrics = _classification(picked, proba, classes_of)
    coverage = labelled / rows if rows else 0.0
    age = now - window_end
    mature = coverage >= config.min_label_coverage or age >= config.max_label_delay
    names = REGRESSION_METRICS if schema.task == "regression" else CLASSIFICATION_METRICS
    reference = {m: reference_metrics.get(m) for m in names}
    drops = {m: _drop(m, metrics[m], reference[m]) for m in names}

    reasons: list[str] = []
    if not mature:
        reasons.append(
            f"not mature: label coverage {coverage:.1%} < {config.min_label_coverage:.1%} and "
            f"window ended {_age(age)} ago < max label delay {_age(config.max_label_delay)}")
    if labelled < config.min_labelled_rows:
        reasons.append(f"{labelled} labelled rows < {config.min_labelled_rows} needed "
                       f"(label coverage {coverage:.1%})")
    judged = {m: d for m, d in drops.items() if m in config.allowed_drop and d is not None}
    status: Status
    if reasons:
        status = "skipped"
    elif not judged:
        status = "skipped"
        judgeable = [m for m in names if m in config.allowed_drop]
        reasons.append(f"none of {', '.join(judgeable)} could be compared with the reference "
                       "(undefined on one side)" if judgeable else
                       f"allowed_drop names none of {', '.join(names)}: nothing to judge")
    else:
        for m, d in judged.items():
            if d > config.allowed_drop[m] + _EPS:
                reasons.append(_exceeded(m, metrics[m], reference[m], d,  # type: ignore[arg-type]
                                         config.allowed_drop[m]))
        status = "critical" if reasons else "ok"
    return PerformanceResult(
        task=schema.task, rows=rows, labelled_rows=labelled, label_coverage=coverage,
        mature=mature, metrics=metrics, reference_metrics=reference, drops=drops,
        status=status, reasons=tuple(reasons),
    )
