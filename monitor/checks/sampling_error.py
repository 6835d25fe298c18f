"""How much an estimated metric moves by chance alone in a window of n rows.

As NannyML 0.13.1 (``nannyml/sampling_error/``): the spread of the metric's per-row
contributions is measured once on the labelled reference, then scaled by the square root
of the rows that contribute in a window. Accuracy: the standard deviation of per-row
correctness over sqrt(n). Precision, recall, F1: the spread over the rows that count for
the metric (predicted positive; labelled positive; either), scaled by the share of such
rows. ROC AUC: the spread of the positives' rank gaps (the Mann-Whitney form). Binary
metrics use one class; multiclass ones combine the classes' variances (for ROC AUC times
1.2, NannyML's empirical correction). The confidence band is the estimate +- 3 sampling
errors, clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BAND_SIGMAS", "SamplingErrors", "band"]

BAND_SIGMAS = 3.0  # NannyML's SAMPLING_ERROR_RANGE
_AUC_MULTICLASS_FACTOR = 1.2

Component = tuple[float, float] | None  # (spread, share of rows that count); None: undefined


def band(value: float | None, error: float | None) -> tuple[float | None, float | None]:
    """The confidence band of an estimate: +-3 sampling errors, within [0, 1]."""
    if value is None or error is None:
        return None, None
    return max(0.0, value - BAND_SIGMAS * error), min(1.0, value + BAND_SIGMAS * error)


def _binary_std(ones: int, zeros: int, scale: float = 1.0) -> float:
    """Population standard deviation of ``ones`` values ``scale`` and ``zeros`` zeros."""
    p = ones / (ones + zeros)
    return scale * math.sqrt(p * (1.0 - p))


def _f1(tp: int, fp: int, fn: int, rows: int, *, binary: bool) -> Component:
    relevant = tp + fp + fn
    if not relevant:
        return None
    # Binary: per-row F1 contributions scaled so that their mean is the F1 (NannyML's
    # correcting factor); multiclass: left unscaled, as NannyML does.
    scale = relevant / (0.5 * (fp + fn) + tp) if binary else 1.0
    return _binary_std(tp, fp + fn, scale), relevant / rows


def _precision(tp: int, fp: int, rows: int) -> Component:
    return (_binary_std(tp, fp), (tp + fp) / rows) if tp + fp else None


def _recall(tp: int, fn: int, rows: int) -> Component:
    return (_binary_std(tp, fn), (tp + fn) / rows) if tp + fn else None


def _auc(outcome: np.ndarray, scores: np.ndarray) -> Component:
    """Spread of the positives' rank gaps over the negatives (the minority outcome taken as
    positive), as NannyML ranks them: numpy's default sort, a positive ranked first left
    out with the negatives."""
    if np.mean(outcome) > 0.5:
        outcome, scores = np.abs(outcome - 1), 1 - scores
    order = np.argsort(scores)
    ranked = outcome[order]
    positive_ranks = ranked * np.arange(len(ranked))
    indexes = np.unique(positive_ranks)[1:]
    n_pos = int(np.sum(ranked))
    n_neg = len(ranked) - n_pos
    if not len(indexes) or not n_pos or not n_neg:
        return None
    gaps = (indexes - np.arange(len(indexes))) / n_neg
    return float(np.std(gaps)), n_pos / len(ranked)


@dataclass(frozen=True)
class SamplingErrors:
    """Per metric the spread measured on the reference (binary: of the positive class;
    multiclass: per class), to scale to any window size with ``at``."""

    binary: bool
    accuracy: float
    f1: tuple[Component, ...]
    precision: tuple[Component, ...]
    recall: tuple[Component, ...]
    roc_auc: tuple[Component, ...]

    @classmethod
    def fit(cls, label: np.ndarray, predicted: np.ndarray, raw: np.ndarray) -> SamplingErrors:
        """``label`` and ``predicted``: per reference row the column of its class (-1:
        outside the classes); ``raw``: rows x classes, the model's scores (binary: two
        columns, the second the positive class)."""
        rows, n_classes = raw.shape
        binary = n_classes == 2
        correct = (label == predicted) & (label >= 0)
        f1, precision, recall, auc = [], [], [], []
        for c in [1] if binary else range(n_classes):
            is_label, is_pred = label == c, predicted == c
            tp = int(np.sum(is_label & is_pred))
            fp = int(np.sum(~is_label & is_pred))
            fn = int(np.sum(is_label & ~is_pred))
            f1.append(_f1(tp, fp, fn, rows, binary=binary))
            precision.append(_precision(tp, fp, rows))
            recall.append(_recall(tp, fn, rows))
            auc.append(_auc(is_label.astype(int), raw[:, c]))
        return cls(binary, float(np.std(correct.astype(int))), tuple(f1), tuple(precision),
                   tuple(recall), tuple(auc))

    def _combine(self, components: tuple[Component, ...], rows: int,
                 factor: float = 1.0) -> float | None:
        if any(c is None for c in components):
            return None
        parts = [c for c in components if c is not None]
        if self.binary:
            spread, share = parts[0]
            return spread / math.sqrt(rows * share)
        variance = sum(spread**2 / (rows * share) for spread, share in parts)
        return math.sqrt(variance) / len(parts) * factor

    def at(self, rows: int) -> dict[str, float | None]:
        """Sampling error of each estimated metric in a window of ``rows`` rows."""
        if rows <= 0:
            return dict.fromkeys(("accuracy", "f1", "precision", "recall", "roc_auc"))
        return {
            "accuracy": self.accuracy / math.sqrt(rows),
            "f1": self._combine(self.f1, rows),
            "precision": self._combine(self.precision, rows),
            "recall": self._combine(self.recall, rows),
            "roc_auc": self._combine(self.roc_auc, rows,
                                     1.0 if self.binary else _AUC_MULTICLASS_FACTOR),
        }
