"""Segments: the checks of a window run again on each segment, the rows that share a value
of a segment column (``segments.columns``), each against the reference rows of the same
segment; pure, no I/O.

Bounded: per column the ``max_values`` most frequent values of the window are segments of
their own, the other values one segment, ``__other__``; a segment with fewer than
``min_rows`` rows is ``insufficient_data`` and not checked.

A segment's figures are what the run's own checks say of its rows alone
(``check_drift``, ``check_performance``, ``check_estimated``; the schema check's counts
come from the window's one pass, per segment: ``SchemaAccumulator.group_result``). What
makes that cheap: the window's columns are reordered once per segment column so that
each segment's rows are one contiguous slice, in row order (text columns coded once), and
each segment is then checked on views of those slices, with no copy of the window per
segment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from monitor.checks.drift import ReferenceProfile, check_drift
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

__all__ = ["ReferenceLookup", "SegmentLabels", "SegmentReference", "Segmentation",
           "check_segments", "segment_labels", "segment_reference"]

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


def _label(value: object) -> str:
    text = label_of(value)
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH - 1] + "…"


def segment_labels(values: pd.Series) -> np.ndarray:
    """Each row's segment value: an object array of labels (``label_of``, cut at
    ``MAX_VALUE_LENGTH``), ``__null__`` where there is none."""
    raw, uniques = pd.factorize(values, use_na_sentinel=True)
    lut = np.array([*map(_label, uniques), NULL_SEGMENT], dtype=object)
    return lut[np.where(raw >= 0, raw, len(uniques))]


@dataclass(frozen=True)
class Segmentation:
    """One column's segments: ``names`` (most frequent first, ``__other__`` last when
    values were folded), the values each covers (``covers``), their label ids
    (``ids``), their rows in the whole window (``rows``), and per row of the frames the
    segment checks see (the window, or its sample) the segment's index (``codes``)."""

    column: str
    names: tuple[str, ...]
    covers: tuple[frozenset[str], ...]
    ids: tuple[tuple[int, ...], ...]
    rows: tuple[int, ...]
    codes: np.ndarray

    @property
    def folded(self) -> int:
        return len(self.covers[-1]) if self.names and self.names[-1] == OTHER_SEGMENT else 0


class SegmentLabels:
    """One segment column's values over a window read chunk by chunk: a stable id per
    label and the rows per id, so the most frequent values are known once the whole
    window is read."""

    def __init__(self, column: str) -> None:
        self.column = column
        self._ids: dict[str, int] = {}
        self._rows = np.zeros(0, dtype=np.int64)

    @property
    def size(self) -> int:
        return len(self._ids)

    def add(self, values: pd.Series) -> np.ndarray:
        """The chunk's label id per row (counted)."""
        raw, uniques = pd.factorize(values, use_na_sentinel=True)
        lut = np.array([self._ids.setdefault(_label(v), len(self._ids)) for v in uniques]
                       + [self._ids.setdefault(NULL_SEGMENT, len(self._ids))], dtype=np.int64)
        ids = lut[np.where(raw >= 0, raw, len(uniques))]
        counts = np.bincount(ids, minlength=len(self._ids))
        counts[:len(self._rows)] += self._rows
        self._rows = counts
        return ids

    def segmentation(self, ids: np.ndarray, max_values: int) -> Segmentation:
        """The window's segments, and the segment of each row whose label ids are
        ``ids`` (the rows the segment checks see)."""
        labels = list(self._ids)
        order = sorted((i for i in range(len(labels)) if self._rows[i]),
                       key=lambda i: (-self._rows[i], labels[i]))
        kept, rest = order[:max_values], order[max_values:]
        remap = np.full(max(len(labels), 1), len(kept), dtype=np.int64)
        remap[kept] = np.arange(len(kept))
        groups = [[i] for i in kept] + ([rest] if rest else [])
        names = [labels[i] for i in kept] + ([OTHER_SEGMENT] if rest else [])
        return Segmentation(
            self.column, tuple(names),
            tuple(frozenset(labels[i] for i in g) for g in groups),
            tuple(tuple(g) for g in groups),
            tuple(int(self._rows[g].sum()) for g in groups),
            remap[ids] if len(ids) else np.zeros(0, dtype=np.int64))


def _worst(statuses: list[str]) -> Literal["ok", "warn", "critical"]:
    worst = max(statuses, key=lambda s: _RANK.get(s, 0), default="ok")
    return worst if worst in ("warn", "critical") else "ok"  # type: ignore[return-value]


def _run(compute: Callable[[], object]) -> object:
    """One check of one segment; a failure is that check's error, not the segment's."""
    try:
        return compute()
    except Exception as exc:
        return ErrorSection(error=f"{type(exc).__name__}: {exc}", at="segments")


# Realized and estimated performance of a segment's answered rows: called with what the
# segment is compared with, the predictions, labels and probabilities (None: none logged).
Performance = Callable[[SegmentReference, pd.Series, pd.Series, pd.DataFrame | None],
                       PerformanceResult]


@dataclass(frozen=True)
class _Split:
    """Columns reordered so that each segment's rows are one slice, ``bounds[k]`` to
    ``bounds[k + 1]``."""

    bounds: np.ndarray
    columns: dict[str, np.ndarray | pd.Categorical]

    def frame(self, k: int) -> pd.DataFrame:
        lo, hi = int(self.bounds[k]), int(self.bounds[k + 1])
        return pd.DataFrame({name: values[lo:hi] for name, values in self.columns.items()},
                            copy=False)


class _DriftColumns:
    """The drift frame's columns prepared once for every segment column: numeric ones as
    floats, text ones coded (a segment's slice of codes factorizes in microseconds, its
    slice of texts in milliseconds)."""

    def __init__(self, frame: pd.DataFrame, kinds: Mapping[str, str]) -> None:
        from monitor.checks.drift import _numbers

        self.numeric: dict[str, np.ndarray] = {}
        self.coded: dict[str, tuple[np.ndarray, pd.Index]] = {}
        self.other: dict[str, np.ndarray] = {}
        for name in frame.columns:
            series = frame[name]
            if kinds.get(name) == "num":
                self.numeric[name] = _numbers(series)
            elif (series.dtype == object and pd.api.types.infer_dtype(series, skipna=True)
                  in ("string", "integer")):
                # Texts only, or ints only (a prediction): coding merges no two labels
                # (factorizing would merge 1, 1.0 and True), and a segment's slice is ints.
                codes, uniques = pd.factorize(series, use_na_sentinel=True)
                self.coded[name] = (codes.astype(np.min_scalar_type(-max(len(uniques), 1))),
                                    uniques)
            else:
                self.other[name] = series.to_numpy()

    def split(self, rows: _Rows) -> _Split:
        columns: dict[str, np.ndarray | pd.Categorical] = {}
        for name, values in self.numeric.items():
            columns[name] = values[rows.picked]
        for name, (coded, uniques) in self.coded.items():
            columns[name] = pd.Categorical.from_codes(coded[rows.picked], categories=uniques)
        for name, values in self.other.items():
            columns[name] = values[rows.picked]
        return _Split(rows.bounds, columns)


@dataclass(frozen=True)
class _Rows:
    """The rows each segment's checks read: segment ``k``'s are
    ``picked[bounds[k]:bounds[k + 1]]``, in row order."""

    picked: np.ndarray
    bounds: np.ndarray

    def subset(self, keep: np.ndarray, positions: np.ndarray) -> _Rows:
        """The picked rows that ``keep`` marks, as ``positions`` numbers them."""
        mask = keep[self.picked]
        segments = len(self.bounds) - 1
        owner = np.repeat(np.arange(segments), np.diff(self.bounds))
        counts = np.bincount(owner[mask], minlength=segments)
        return _Rows(positions[self.picked[mask]],
                     np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def _pick(codes: np.ndarray, segments: int, max_rows: int | None, seed: int) -> _Rows:
    """Each segment's rows together, in row order; a segment with more than ``max_rows``
    keeps a uniform sample of that many (seeded: a rerun picks the same rows)."""
    # Segment indexes (at most 101) as bytes: numpy sorts those stably by radix, in
    # linear time, where int64 takes a merge sort.
    by_row = np.argsort(codes.astype(np.uint8), kind="stable")
    sizes = np.bincount(codes, minlength=segments)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    if max_rows is None or sizes.max(initial=0) <= max_rows:
        return _Rows(by_row, bounds)
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(segments):
        rows = by_row[bounds[k]:bounds[k + 1]]
        if len(rows) > max_rows:
            rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
        parts.append(rows)
    kept = np.array([len(p) for p in parts], dtype=np.int64)
    return _Rows(np.concatenate(parts), np.concatenate([[0], np.cumsum(kept)]))


def check_segments(
    segmentations: list[Segmentation],
    *,
    drift_kinds: Mapping[str, str],
    schema_of: Callable[[str, tuple[int, ...]], SchemaResult],
    drift_frame: pd.DataFrame,
    performance_frame: pd.DataFrame | None,
    probabilities: pd.DataFrame | None,
    answered: np.ndarray,
    reference: ReferenceLookup,
    seed: int = 0,
    performance: Performance | None,
    schema: ModelSchema,
    config: ModelConfig,
) -> SegmentsResult:
    """Check every segment of every column.

    ``drift_frame`` holds the rows the segment checks see (the window, or its sample),
    whose segments ``segmentations`` give; ``answered`` marks those the model answered,
    which ``performance_frame`` (``prediction`` and ``label``) and ``probabilities`` hold
    in the same order, and which ``performance`` judges against the segment's reference
    (None: the model has no prediction to judge). ``schema_of``: the schema check of the
    window's rows with the given label ids in a column.
    A segment of more than ``segments.max_rows`` rows is checked for drift and
    performance on a uniform sample of that many (drawn with ``seed``); its schema counts
    stay those of all its rows.
    """
    seg_cfg = config.segments
    drift_cols = _DriftColumns(drift_frame, drift_kinds)
    perf_cols: dict[str, np.ndarray] | None = None
    if performance_frame is not None:
        perf_cols = {"prediction": performance_frame["prediction"].to_numpy(),
                     "label": performance_frame["label"].to_numpy()}
        if probabilities is not None:
            probs = probabilities.to_numpy(dtype=float)
            perf_cols |= {f"p{i}": probs[:, i] for i in range(probs.shape[1])}
    results: list[SegmentResult] = []
    answered_pos = np.cumsum(answered) - 1
    for i, part in enumerate(segmentations):
        rows = _pick(part.codes, len(part.names), seg_cfg.max_rows, seed + i)
        drift_split = drift_cols.split(rows)
        perf_split = None
        if perf_cols is not None:
            perf_rows = rows.subset(answered, answered_pos)
            perf_split = _Split(perf_rows.bounds, {
                name: values[perf_rows.picked] for name, values in perf_cols.items()})
        for k, name in enumerate(part.names):
            results.append(_segment(
                part, k, name, schema_of=schema_of, drift_split=drift_split,
                sampled=int(rows.bounds[k + 1] - rows.bounds[k]),
                perf_split=perf_split, probability_columns=(
                    None if probabilities is None else list(probabilities.columns)),
                reference=reference, performance=performance, schema=schema,
                config=config))
    worst = _worst([seg.status for seg in results])
    reasons = [f"{seg.key}: {reason}" for seg in results if seg.status in ("warn", "critical")
               for reason in seg.reasons[:_REASONS_PER_SEGMENT]]
    capped: Literal["ok", "warn", "critical"] = (
        "ok" if seg_cfg.severity == "none"
        else min(worst, seg_cfg.severity, key=lambda s: _RANK[s]))
    return SegmentsResult(
        columns=tuple(p.column for p in segmentations), segments=tuple(results),
        severity=seg_cfg.severity, status=capped, reasons=tuple(reasons),
        folded={p.column: p.folded for p in segmentations})


def _segment(
    part: Segmentation, k: int, name: str, *,
    schema_of: Callable[[str, tuple[int, ...]], SchemaResult], drift_split: _Split,
    sampled: int, perf_split: _Split | None, probability_columns: list[str] | None,
    reference: ReferenceLookup, performance: Performance | None, schema: ModelSchema,
    config: ModelConfig,
) -> SegmentResult:
    seg_cfg = config.segments
    rows = part.rows[k]
    if rows < seg_cfg.min_rows:
        return SegmentResult(part.column, name, rows, "insufficient_data",
                             (f"{rows} rows < segments.min_rows {seg_cfg.min_rows}",))
    ref = reference(part.column, part.covers[k])

    def drift() -> DriftResult:
        return check_drift(ref.profile, drift_split.frame(k), config=config.drift,
                           prediction=schema.prediction_column)

    def judged() -> PerformanceResult:
        assert performance is not None and perf_split is not None
        frame = perf_split.frame(k)
        probs = None
        if probability_columns is not None:
            probs = pd.DataFrame({c: frame[f"p{i}"] for i, c in
                                  enumerate(probability_columns)}, copy=False)
        return performance(ref, frame["prediction"], frame["label"], probs)

    sections: dict[str, object] = {
        "schema": _run(lambda: schema_of(part.column, part.ids[k])), "drift": _run(drift),
        "performance": (NotApplicable("the contract declares no prediction")
                        if performance is None else _run(judged))}
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
        part.column, name, rows, _worst(statuses), tuple(reasons),
        reference="whole" if ref.whole else "segment", reference_rows=ref.rows,
        reference_note=ref.note, sample_rows=sampled if sampled < rows else None,
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
    labels per row in ``labels``, as ``segment_labels`` gives them; a column absent there,
    model_version always, compares every segment with the whole reference). A segment
    with fewer than ``min_rows`` reference rows is compared with the whole reference.
    Profiles of segments are built once and kept with the lookup."""
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
