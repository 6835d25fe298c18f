"""The reference side of the segment checks: the reference set split by each segment
column, per reference version.

Segment profiles are built from the reference file, lazily (a segment's first window)
and kept in this process with the file's content hash in the key, like the reference
figures themselves (``monitor.run.reference``). They are not stored: which profiles
exist depends on the segment settings and on the window (``__other__`` covers the
values the window folded), and one costs milliseconds to build from the frame in memory
(a sort of the segment's reference rows per column), against a window's seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.run.reference import drift_columns, profile_key, reference_probabilities
from monitor.run.reference_file import read_reference

if TYPE_CHECKING:
    import numpy as np

    from monitor.checks.segments import ReferenceLookup
    from monitor.run.model import ResolvedModel
    from monitor.run.reference import ReferenceData

__all__ = ["segment_lookup"]

_CACHE: dict[tuple[str, str], ReferenceLookup] = {}
_CACHE_SIZE = 8


def segment_lookup(model: ResolvedModel, reference: ReferenceData) -> ReferenceLookup:
    """The ``ReferenceLookup`` of the model's segments, cached per reference version,
    contract and segment settings."""
    key = (profile_key(model.config, model.schema, reference.version),
           model.config.segments.model_dump_json())
    found = _CACHE.get(key)
    if found is None:
        found = _build(model, reference)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = found
    return found


def _build(model: ResolvedModel, reference: ReferenceData) -> ReferenceLookup:
    from monitor.checks.performance import performance_metrics
    from monitor.checks.segments import segment_labels, segment_reference

    schema, seg_cfg = model.schema, model.config.segments
    frame = read_reference(model.config.reference)
    kinds = drift_columns(schema)
    labels = {c: segment_labels(frame[c]) for c in seg_cfg.columns if c in frame.columns}
    target = schema.target.column if schema.target else None
    metrics_of = None
    if reference.metrics and schema.prediction is not None and target in frame.columns:
        pred_col = schema.prediction.column
        probs = reference_probabilities(frame, schema)

        def metrics_of(rows: np.ndarray) -> dict[str, float | None]:
            return performance_metrics(
                frame[pred_col].take(rows), frame[target].take(rows),
                None if probs is None else probs.take(rows), schema)

    return segment_reference(reference.drift_profile, reference.metrics,
                             reference=frame[[c for c in kinds if c in frame.columns]],
                             labels=labels, columns=kinds,
                             min_rows=seg_cfg.min_reference_rows, metrics_of=metrics_of)
