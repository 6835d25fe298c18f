"""Model versions within one window: each version's rows against the reference (accuracy
once mature, CBPE's estimate, drift of its predictions, error rate, latency p95) and each
pair of versions against each other; pure, no I/O.

The run hands over one code per row (``VersionRows``): the version column of a window
of a million rows is a few distinct strings, factorized once per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from monitor.checks.classes import ClassRows
from monitor.results import VersionComparison, VersionFigures, VersionsResult
from monitor.rollback import estimate_test, two_proportion_test

if TYPE_CHECKING:
    from monitor.checks.drift import ReferenceProfile
    from monitor.checks.estimated import AccuracyEstimator, EstimateRows
    from monitor.config import DriftConfig, PerformanceConfig
    from monitor.schema import ModelSchema
    from monitor.text_codes import TextCodes

__all__ = ["UNKNOWN_VERSION", "VersionCodes", "VersionRows", "check_versions"]

UNKNOWN_VERSION = "unknown"  # rows logged without a version


class VersionCodes:
    """Codes for the versions of a window's chunks, the same code for the same version
    in every chunk."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._code: dict[str, int] = {}

    def codes(self, versions: pd.Series, texts: TextCodes | None = None) -> np.ndarray:
        """One code per row of ``versions`` (null: ``UNKNOWN_VERSION``). ``texts``: the
        column as codes into its distinct texts (a read from log blocks has them)."""
        if texts is not None and texts.numbers is None and len(texts) == len(versions):
            local, uniques = texts.codes, texts.words
        else:
            local, uniques = pd.factorize(versions.to_numpy(dtype=object),
                                          use_na_sentinel=True)
        mapping = np.empty(len(uniques) + 1, dtype=np.int32)
        for i, name in enumerate([*(str(u) for u in uniques), UNKNOWN_VERSION]):
            if name not in self._code:
                self._code[name] = len(self.names)
                self.names.append(name)
            mapping[i] = self._code[name]
        # -1 (null) indexes the last entry: the unknown version.
        out: np.ndarray = mapping[local]
        return out


@dataclass(frozen=True)
class VersionRows:
    """The version code of each row, as the run reads them: every row (``codes``, with
    ``errors`` and ``latency_ms`` aligned), the answered rows (``answered``, aligned with
    the predictions, labels and probabilities) and the drift rows (``drift``)."""

    names: tuple[str, ...]
    codes: np.ndarray
    errors: np.ndarray
    latency_ms: np.ndarray
    answered: np.ndarray
    drift: np.ndarray


def _mature(labelled: int, answered: int, *, config: PerformanceConfig, window_end: datetime,
            now: datetime) -> bool:
    """The performance check's rule: enough label coverage, or old enough."""
    coverage = labelled / answered if answered else 0.0
    return coverage >= config.min_label_coverage or now - window_end >= config.max_label_delay


def check_versions(
    rows: VersionRows,
    *,
    predictions: pd.Series,
    labels: pd.Series,
    probabilities: pd.DataFrame | None,
    drift_predictions: pd.Series | None,
    schema: ModelSchema,
    profile: ReferenceProfile | None,
    estimator: AccuracyEstimator | None,
    reference_accuracy: float | None,
    drift_config: DriftConfig,
    config: PerformanceConfig,
    window_end: datetime,
    now: datetime,
    alpha: float = 0.05,
    estimate_rows: EstimateRows | None = None,
    classes: ClassRows | None = None,
) -> VersionsResult:
    """Each version of the window, most rows first, and each pair compared: realized
    accuracy (two-proportion z-test) when the labels are mature and both have
    ``config.min_labelled_rows`` labelled rows, else the estimate (z-test on CBPE's
    sampling errors). Informational: the section is always ``ok``. ``estimate_rows``:
    the answered rows as ``estimator.rows`` prepared them from ``probabilities`` and
    ``predictions``, when the caller has them (each version's estimate picks its rows).
    ``classes``: a classifier's ``predictions`` and ``labels`` as ``ClassRows.of`` coded
    them, when the caller has them."""
    if len(rows.answered) != len(predictions) or len(labels) != len(predictions):
        raise ValueError("answered version codes, predictions and labels must align")
    classifier = schema.task == "classification"
    if classifier:
        coded = classes if classes is not None else ClassRows.of(predictions, labels)
        has_label, right = coded.labelled, coded.right
    else:
        has_label = labels.notna().to_numpy() & predictions.notna().to_numpy()
        right = np.zeros(len(predictions), dtype=bool)
    mature = _mature(int(np.count_nonzero(has_label)), len(predictions), config=config,
                     window_end=window_end, now=now)
    pred_name = schema.prediction_column
    figures = []
    for code, name in enumerate(rows.names):
        mine = rows.codes == code
        n = int(np.count_nonzero(mine))
        if not n:
            continue
        errors = int(np.count_nonzero(rows.errors[mine]))
        lat = rows.latency_ms[mine]
        lat = lat[np.isfinite(lat)]
        answered = rows.answered == code
        labelled = int(np.count_nonzero(has_label & answered))
        correct = int(np.count_nonzero(right & answered))
        accuracy = correct / labelled if classifier and mature and labelled else None
        estimated = error = None
        used = 0
        if classifier and estimator is not None and probabilities is not None and answered.any():
            if estimate_rows is None:  # prepared once, each version picks its rows
                estimate_rows = estimator.rows(probabilities, predictions)
            # The accuracy alone: no other estimated metric is shown per version.
            used, estimated, error = estimator.accuracy_of_rows(estimate_rows, answered)
        drift = None
        if (profile is not None and drift_predictions is not None and pred_name is not None
                and pred_name in profile.columns):
            from monitor.checks.drift import check_column

            # One copy of the version's predictions (a pick, renumbered, then framed had
            # made three).
            frame = pd.DataFrame(
                {pred_name: drift_predictions.to_numpy()[rows.drift == code]}, copy=False)
            drift = check_column(profile, frame, pred_name, config=drift_config)
        figures.append(VersionFigures(
            version=name, rows=n, errors=errors, error_rate=errors / n,
            latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else None,
            labelled_rows=labelled if classifier else 0, correct=correct if classifier else 0,
            accuracy=accuracy,
            accuracy_drop=(reference_accuracy - accuracy
                           if accuracy is not None and reference_accuracy is not None else None),
            estimated_accuracy=estimated, estimated_sampling_error=error, estimated_rows=used,
            prediction_drift_method=drift.method if drift else None,
            prediction_drift_score=drift.score if drift else None,
            prediction_drift_threshold=drift.threshold if drift else None,
            prediction_drifted=drift.drifted if drift and drift.method else None,
        ))
    figures.sort(key=lambda f: (-f.rows, f.version))
    comparisons = tuple(_compare(a, b, mature=mature, min_labelled=config.min_labelled_rows,
                                 alpha=alpha) for a, b in combinations(figures, 2))
    reasons = tuple(
        f"{c.better} {c.basis.replace('_', ' ')} "
        f"{c.value_a if c.better == c.a else c.value_b:.3f} vs "
        f"{c.b if c.better == c.a else c.a} "
        f"{c.value_b if c.better == c.a else c.value_a:.3f} (p={c.p_value:.2g})"
        for c in comparisons if c.better is not None and c.p_value is not None)
    return VersionsResult(versions=tuple(figures), comparisons=comparisons, mature=mature,
                          alpha=alpha, reasons=reasons)


def _compare(a: VersionFigures, b: VersionFigures, *, mature: bool, min_labelled: int,
             alpha: float) -> VersionComparison:
    if (mature and a.accuracy is not None and b.accuracy is not None
            and a.labelled_rows >= min_labelled and b.labelled_rows >= min_labelled):
        p = two_proportion_test(a.correct, a.labelled_rows, b.correct, b.labelled_rows)
        return VersionComparison(a.version, b.version, "accuracy", a.accuracy, b.accuracy, p,
                                 _better(a.version, b.version, a.accuracy, b.accuracy, p, alpha))
    if (a.estimated_accuracy is not None and b.estimated_accuracy is not None
            and a.estimated_sampling_error is not None
            and b.estimated_sampling_error is not None):
        q = estimate_test(a.estimated_accuracy, a.estimated_sampling_error,
                          b.estimated_accuracy, b.estimated_sampling_error)
        return VersionComparison(
            a.version, b.version, "estimated_accuracy", a.estimated_accuracy,
            b.estimated_accuracy, q,
            None if q is None else _better(a.version, b.version, a.estimated_accuracy,
                                           b.estimated_accuracy, q, alpha))
    return VersionComparison(a.version, b.version, "none", None, None, None, None)


def _better(a: str, b: str, va: float, vb: float, p: float, alpha: float) -> str | None:
    if p >= alpha or va == vb:
        return None
    return a if va > vb else b
