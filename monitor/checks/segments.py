"""Segments: the checks of a window run again on each segment, the rows that share a value
of a segment column (``segments.columns``), each against the reference rows of the same
segment; pure, no I/O.

Bounded: per column the ``max_values`` most frequent values of the window are segments of
their own, the other values one segment, ``__other__``; a segment with fewer than
``min_rows`` rows is ``insufficient_data`` and not checked. The checks are the run's own
functions (``check_schema``, ``check_drift``, ``check_performance``, ``check_estimated``),
given the segment's rows: a segment's figures are exactly what those functions say of its
rows alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from monitor.checks.drift import ReferenceProfile, check_drift
from monitor.checks.schema_check import check_schema
from monitor.config import NULL_SEGMENT, OTHER_SEGMENT, ModelConfig
from monitor.results import (
    DriftResult,
    ErrorSection,
    NotApplicable,
    PerformanceResult,
    SchemaResult,
    SegmentResult,
    SegmentsResult,
)
from monitor.schema import ModelSchema, label_of

__all__ = ["ReferenceLookup", "SegmentReference", "Segmentation", "check_segments",
           "segment_labels", "segment_reference", "segment_rows"]

# A segment value is a label in metrics and a key in the store: long ones are cut.
MAX_VALUE_LENGTH = 100
_RANK = {"ok": 0, "warn": 1, "critical": 2}
# Reasons of one segment carried into the section's (the segment keeps them all).
_REASONS_PER_SEGMENT = 3


@dataclass(frozen=True)
class SegmentReference:
    """What a segment is compared with: the reference rows of the same segment, or the
    whole reference set (``whole``, with ``note`` saying why)."""

    profile: ReferenceProfile
    metrics: Mapping[str, float | None]
    rows: int
    whole: bool
    note: str | None = None


class ReferenceLookup(Protocol):
    """The reference of the segment of ``column`` covering ``values`` (one value, or the
    values folded into ``__other__``)."""

    def __call__(self, column: str, values: frozenset[str]) -> SegmentReference: ...


@dataclass(frozen=True)
class Segmentation:
    """One column's segments over a window: per row its segment's index into ``names``
    (most frequent first, ``__other__`` last when values were folded), and the values each
    segment covers."""

    column: str
    codes: np.ndarray
    names: tuple[str, ...]
    covers: tuple[frozenset[str], ...]

    @property
    def folded(self) -> int:
        return len(self.covers[-1]) if self.names and self.names[-1] == OTHER_SEGMENT else 0


def _label(value: object) -> str:
    text = label_of(value)
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH - 1] + "…"


def segment_labels(values: pd.Series) -> np.ndarray:
    """Each row's segment value as ``segment_rows`` names it (before folding): an object
    array of labels, ``__null__`` where there is none."""
    raw, uniques = pd.factorize(values, use_na_sentinel=True)
    lut = np.array([*map(_label, uniques), NULL_SEGMENT], dtype=object)
    return lut[np.where(raw >= 0, raw, len(uniques))]


def segment_rows(column: str, values: pd.Series, max_values: int) -> Segmentation:
    """Each row's segment: its value's label (``__null__`` for none), the ``max_values``
    most frequent kept (ties by label), the rest folded into ``__other__``."""
    raw, uniques = pd.factorize(values, use_na_sentinel=True)
    labels: dict[str, int] = {}
    lut = np.array([labels.setdefault(_label(v), len(labels)) for v in uniques] or [0],
                   dtype=np.int64)
    null = len(labels)
    codes = np.where(raw >= 0, lut[np.maximum(raw, 0)], null)
    names = [*labels, NULL_SEGMENT]
    counts = np.bincount(codes, minlength=len(names))
    order = sorted((i for i in range(len(names)) if counts[i]),
                   key=lambda i: (-counts[i], names[i]))
    kept, rest = order[:max_values], order[max_values:]
    remap = np.full(len(names), len(kept), dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    out_names = [names[i] for i in kept]
    covers = [frozenset({names[i]}) for i in kept]
    if rest:
        out_names.append(OTHER_SEGMENT)
        covers.append(frozenset(names[i] for i in rest))
    return Segmentation(column, remap[codes], tuple(out_names), tuple(covers))


def _worst(statuses: list[str]) -> Literal["ok", "warn", "critical"]:
    worst = max(statuses, key=lambda s: _RANK.get(s, 0), default="ok")
    return worst if worst in ("warn", "critical") else "ok"  # type: ignore[return-value]


def _run(compute: Callable[[], object]) -> object:
    """One check of one segment; a failure is that check's error, not the segment's."""
    try:
        return compute()
    except Exception as exc:
        return ErrorSection(error=f"{type(exc).__name__}: {exc}", at="segments")


Performance = Callable[[Mapping[str, float | None], np.ndarray],
                       PerformanceResult | NotApplicable]


def check_segments(
    segmentations: list[Segmentation],
    *,
    features: pd.DataFrame,
    predictions: pd.Series | None,
    drift_frame: pd.DataFrame,
    answered: np.ndarray,
    reference: ReferenceLookup,
    performance: Performance | None,
    schema: ModelSchema,
    config: ModelConfig,
) -> SegmentsResult:
    """Check every segment of every column.

    ``features``, ``predictions`` and ``drift_frame`` are the window's rows (or its
    sample) in one order, which ``segmentations`` follow; ``answered`` marks the rows
    the model answered, those ``performance`` (called with the reference's metrics and
    the answered rows' positions among the answered ones) judges. ``performance`` None:
    the model has no prediction to judge (task: features).
    """
    seg_cfg = config.segments
    answered_pos = np.cumsum(answered) - 1
    results: list[SegmentResult] = []
    for part in segmentations:
        order = np.argsort(part.codes, kind="stable")  # rows of each segment, in row order
        bounds = np.concatenate([[0], np.cumsum(np.bincount(part.codes,
                                                            minlength=len(part.names)))])
        for k, name in enumerate(part.names):
            rows = order[bounds[k]:bounds[k + 1]]
            results.append(_segment(part.column, name, part.covers[k], rows,
                                    features=features, predictions=predictions,
                                    drift_frame=drift_frame, answered=answered,
                                    answered_pos=answered_pos, reference=reference,
                                    performance=performance, schema=schema, config=config))
    worst = _worst([seg.status for seg in results])
    reasons = [f"{seg.key}: {reason}" for seg in results if seg.status in ("warn", "critical")
               for reason in seg.reasons[:_REASONS_PER_SEGMENT]]
    capped: Literal["ok", "warn", "critical"] = (
        "ok" if seg_cfg.severity == "none"
        else min(worst, seg_cfg.severity, key=lambda s: _RANK[s]))  # type: ignore[assignment]
    return SegmentsResult(
        columns=tuple(p.column for p in segmentations), segments=tuple(results),
        severity=seg_cfg.severity, status=capped, reasons=tuple(reasons),
        folded={p.column: p.folded for p in segmentations})


def _segment(
    column: str, name: str, covers: frozenset[str], rows: np.ndarray, *,
    features: pd.DataFrame, predictions: pd.Series | None, drift_frame: pd.DataFrame,
    answered: np.ndarray, answered_pos: np.ndarray, reference: ReferenceLookup,
    performance: Performance | None, schema: ModelSchema, config: ModelConfig,
) -> SegmentResult:
    seg_cfg = config.segments
    if len(rows) < seg_cfg.min_rows:
        return SegmentResult(column, name, len(rows), "insufficient_data",
                             (f"{len(rows)} rows < segments.min_rows {seg_cfg.min_rows}",))
    ref = reference(column, covers)

    def schema_check() -> SchemaResult:
        return check_schema(features.take(rows),
                            None if predictions is None else predictions.take(rows),
                            schema, config=config.schema_check)

    def drift() -> DriftResult:
        return check_drift(ref.profile, drift_frame.take(rows), config=config.drift,
                           prediction=schema.prediction_column)

    sections: dict[str, object] = {"schema": _run(schema_check), "drift": _run(drift)}
    if performance is None:
        sections["performance"] = NotApplicable("the contract declares no prediction")
    else:
        perf_rows = answered_pos[rows[answered[rows]]]
        sections["performance"] = _run(lambda: performance(ref.metrics, perf_rows))
    reasons: list[str] = []
    statuses: list[str] = []
    for check, sec in sections.items():
        if isinstance(sec, ErrorSection):
            reasons.append(f"{check}: could not run: {sec.error}")
            continue
        status = getattr(sec, "status", "ok")
        statuses.append(status)
        if status in ("warn", "critical"):
            reasons += [f"{check}: {r}" for r in getattr(sec, "reasons", ())]
    return SegmentResult(
        column, name, len(rows), _worst(statuses), tuple(reasons),
        reference="whole" if ref.whole else "segment", reference_rows=ref.rows,
        reference_note=ref.note,
        schema=sections["schema"],  # type: ignore[arg-type]
        drift=sections["drift"],  # type: ignore[arg-type]
        performance=sections["performance"],  # type: ignore[arg-type]
    )


def segment_reference(
    whole: ReferenceProfile, whole_metrics: Mapping[str, float | None], *,
    reference: pd.DataFrame | None, labels: Mapping[str, np.ndarray],
    columns: Mapping[str, Literal["num", "cat"]], min_rows: int,
    metrics_of: Callable[[np.ndarray], Mapping[str, float | None]] | None,
) -> ReferenceLookup:
    """A ``ReferenceLookup`` over the reference set ``reference`` (its segment columns'
    labels per row in ``labels``; a column absent there, model_version always, compares
    every segment with the whole reference). Profiles of segments are built once and
    kept (the lookup is cached with the reference)."""
    built: dict[tuple[str, frozenset[str]], SegmentReference] = {}

    def whole_ref(note: str) -> SegmentReference:
        return SegmentReference(whole, whole_metrics, whole.rows, True, note)

    def lookup(column: str, values: frozenset[str]) -> SegmentReference:
        key = (column, values)
        found = built.get(key)
        if found is not None:
            return found
        if reference is None or column not in labels:
            return whole_ref(f"the reference set has no {column} column: compared with the "
                             "whole reference set")
        mask = np.isin(labels[column], np.array(sorted(values), dtype=object))
        rows = int(mask.sum())
        if rows < min_rows:
            found = whole_ref(f"{rows} reference rows < segments.min_reference_rows "
                              f"{min_rows}: compared with the whole reference set")
        else:
            picked = np.flatnonzero(mask)
            profile = ReferenceProfile.build(reference.take(picked), columns)
            metrics = metrics_of(picked) if metrics_of is not None else whole_metrics
            found = SegmentReference(profile, metrics, rows, False)
        if len(built) >= 256:  # bounded: __other__ covers other values in other windows
            built.pop(next(iter(built)))
        built[key] = found
        return found

    return lookup
