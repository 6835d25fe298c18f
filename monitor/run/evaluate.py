"""One full check run over a window: schema, drift, performance (realized and estimated),
service health, and multivariate drift when enabled. Each check runs on its own; one that
fails is recorded as an error section and the others still run.

Windows up to ``drift.max_exact_rows`` rows are read whole and every figure is exact.
Larger windows are read in chunks with bounded memory: the schema check, row and
error counts and latency quantiles stay exact, while drift and performance run on a
uniform random sample of ``max_exact_rows`` rows (seeded by the window, so a rerun
draws the same sample); the run records that it sampled and how much.
"""

from __future__ import annotations

import hashlib
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from monitor.checks.classes import ClassRows
from monitor.checks.schema_check import SchemaAccumulator
from monitor.checks.segments import SegmentLabels
from monitor.config import PerformanceConfig
from monitor.errors import ConfigError
from monitor.results import (
    CheckRun,
    DriftResult,
    ErrorSection,
    MultivariateResult,
    NotApplicable,
    PerformanceResult,
    Section,
    SegmentsResult,
    ServiceResult,
    VersionsResult,
    overall_status,
)
from monitor.run.model import ResolvedModel
from monitor.run.reference import ReferenceData, drift_columns
from monitor.schema import ModelSchema, label_text
from monitor.store.frames import free_memory

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from monitor.checks.estimated import EstimateRows
    from monitor.checks.segments import Segmentation, SegmentReference
    from monitor.store.sources import LogSource, LogWindow
    from monitor.text_codes import TextCodes

__all__ = ["CHUNK_ROWS", "FEATURES_ONLY", "evaluate_window"]

CHUNK_ROWS = 200_000
# Why a features-only model's performance section does not apply (task: features).
FEATURES_ONLY = ("the contract declares no prediction (task: features): accuracy, its "
                 "estimate and calibration do not apply; the inputs are checked alone")


S = TypeVar("S")


def _section(compute: Callable[[], S]) -> S | ErrorSection:
    """Run one check; a failure becomes an error section naming the cause."""
    try:
        return compute()
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return ErrorSection(error=f"{type(exc).__name__}: {exc}",
                            at=f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}")


def _seed(model: str, start: datetime) -> int:
    return int.from_bytes(hashlib.sha256(f"{model}|{start.isoformat()}".encode()).digest()[:8],
                          "little")


def _drift_frame(window: LogWindow, schema: ModelSchema) -> pd.DataFrame:
    """The drift columns of a chunk: the window's own column arrays, not a copy (what
    ``reindex`` made: a million rows of features); an absent one is all NaN, as
    ``reindex`` fills it."""
    import numpy as np
    import pandas as pd

    kinds = drift_columns(schema)
    pred = schema.prediction_column
    features = window.features
    present = set(features.columns)
    columns: dict[str, object] = {
        c: features[c] if c in present else np.full(len(features), np.nan)
        for c in kinds if c != pred}
    if pred is not None:
        columns[pred] = window.meta["prediction"].to_numpy()
    return pd.DataFrame(columns, index=features.index, copy=False)


# Meta columns no check reads: a read from log blocks leaves them out (a million request
# ids are a million Python strings, 70 MB).
_UNREAD_META = ("request_id", "ts", "error_message", "label_time")


def _read_whole(source: LogSource, start: datetime, end: datetime, limit: int
                ) -> tuple[int, LogWindow | None]:
    """The window's row count, and the window read whole if it has at most ``limit``
    rows (else None: it is read in chunks). mqm's own table counts it once, in the read."""
    from monitor.store.sources import BuiltinSource

    if isinstance(source, BuiltinSource):
        return source.read_window_within(start, end, limit, skip=_UNREAD_META)
    rows = source.count(start, end)
    return rows, source.read_window(start, end) if rows <= limit else None


def _perf_frames(window: LogWindow, keep: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions with their labels, and the probabilities (one column per class), of
    the rows the model answered (``keep``): two aligned frames."""
    import pandas as pd

    frame = pd.DataFrame({"prediction": window.meta["prediction"].to_numpy(),
                          "label": window.labels.to_numpy()})
    if keep.all():  # every row answered: the window's own probabilities, not a copy
        return frame, window.probabilities
    # The window's frames are numbered 0..n-1 already; a mask's result is a new frame,
    # renumbered in place (``reset_index`` copies every column).
    probs = window.probabilities[keep]
    probs.index = pd.RangeIndex(len(probs))
    answered = frame[keep]
    answered.index = pd.RangeIndex(len(answered))
    return answered, probs


def _answered_codes(codes: TextCodes | None, answered: list[np.ndarray], sampled: bool
                    ) -> TextCodes | None:
    """A column's ``label_text`` codes (``codes``, the read's, or None) of the answered
    rows of a window read whole; None when the read had none."""
    if sampled or codes is None or len(answered) != 1:
        return None
    keep = answered[0]
    return codes if keep.all() else codes.take(keep)


def _as_text(values: pd.Series, codes: TextCodes | None) -> pd.Series:
    """``label_text(values)``; from the codes the read made when it has them (a pass over
    a million Python values less)."""
    import pandas as pd

    if codes is None:
        return label_text(values)
    return pd.Series(codes.texts(), index=values.index, dtype=object, name=values.name)


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts as one frame; a window read whole is its one part, not a copy of it (a
    million rows of features are a hundred megabytes)."""
    import pandas as pd

    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def evaluate_window(
    model: ResolvedModel, *, start: datetime, end: datetime, now: datetime
) -> CheckRun:
    """Read the window and run every check on it (no writes).

    For mqm's own log table the rows per fallback reason (why the serving guard
    answered with its default) go to the service check.

    Two threads share the sections: drift on a second one as soon as the window is
    read, while this one prepares the rest; then each thread takes the next of the other
    sections (performance with its estimate, the schema check of a window read whole,
    versions, service) as it finishes one, so that neither waits long for the other.
    Most of each is numpy and pandas work that lets go of the GIL (sorts, factorizing,
    reductions): on two cores a warm 1M-row check takes about 0.95 s, of which 0.5 s is
    the read (``bench/README.md``, "eighth pass").
    Each section only reads the window's frames and the reference; the classes and
    estimate rows that performance and versions both read are made before either
    starts. Sections side by side hold their temporaries at the same time: each keeps
    few (see ``estimated_metrics``), so a 1M-row check stays under 500 MB.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqm-check") as pool:
        return _evaluate(model, start, end, now, pool)


def _evaluate(model: ResolvedModel, start: datetime, end: datetime, now: datetime,
              pool: ThreadPoolExecutor) -> CheckRun:
    import numpy as np
    import pandas as pd

    from monitor.checks.versions import VersionCodes, VersionRows

    source, model_cfg, schema = model.source, model.config, model.schema
    reference = model.reference
    limit = model_cfg.drift.max_exact_rows
    rows, whole = _read_whole(source, start, end, limit)
    sampled = whole is None
    schema_acc = SchemaAccumulator(schema, model_cfg.schema_check)
    latencies: list[np.ndarray] = []
    error_parts: list[np.ndarray] = []
    drift_parts: list[pd.DataFrame] = []
    perf_parts: list[pd.DataFrame] = []
    prob_parts: list[pd.DataFrame] = []
    # Segments: each row's label id per segment column (the schema check counts them in
    # its one pass), kept for the rows drift and performance see; and which they answered.
    seg_cfg = model_cfg.segments
    seg_problem = _segment_problem(model)
    labelers = {c: SegmentLabels(c) for c in seg_cfg.columns} if not seg_problem else {}
    seg_ids: dict[str, list[np.ndarray]] = {c: [] for c in labelers}
    # Per row of the drift frame, whether the model answered it (a row of the performance
    # frame): segments split the performance rows by it, and a regressor's loss estimate
    # reads those rows' inputs.
    answered_parts: list[np.ndarray] = []
    version_codes = VersionCodes()
    code_parts: list[np.ndarray] = []  # every row's version, then the drift rows'
    drift_code_parts: list[np.ndarray] = []
    fallback_counts: Counter[str] | None = Counter() if model.counts_fallbacks else None
    rng = np.random.default_rng(_seed(model.name, start))

    def need_reference() -> ReferenceData:
        if reference is None:
            raise RuntimeError(model.reference_error or "reference set unavailable")
        return reference

    def drift_of(frame: pd.DataFrame, texts: dict[str, TextCodes] | None
                 ) -> Callable[[], DriftResult]:
        def drift() -> DriftResult:
            from monitor.checks.drift import check_drift

            return check_drift(need_reference().drift_profile, frame, config=model_cfg.drift,
                               prediction=schema.prediction_column, texts=texts)
        return drift

    drift_done: Future[DriftResult | ErrorSection] | None = None
    chunks = source.iter_chunks(start, end, CHUNK_ROWS) if whole is None else iter([whole])
    features_only = schema.features_only
    window: LogWindow | None = None
    # A window read whole is schema-checked in turn with the other sections (below).
    schema_add: Callable[[], None] | None = None
    for window in chunks:
        drift_part = _drift_frame(window, schema)
        if not sampled:
            # A window read whole: its drift frame is whole already. Drift starts now, and
            # the rest is prepared here meanwhile. Its text columns' codes hold for it
            # (the prediction's column is the meta's, not a feature's).
            texts = None if not window.texts else {
                name: text for name, text in window.texts.items()
                if name != schema.prediction_column}
            drift_done = pool.submit(_section, drift_of(drift_part, texts))
        else:
            # Bernoulli sample: uniform over the window whatever the chunk order.
            keep = rng.random(len(drift_part)) < limit / rows
            drift_part = drift_part[keep]
        drift_parts.append(drift_part)
        groups = {c: (labeler.add(_segment_values(model, window, c)), labeler.size)
                  for c, labeler in labelers.items()}
        # A features-only model's logs have no prediction to check (stored as null).
        schema_add = partial(schema_acc.add, window.features,
                             None if features_only else window.meta["prediction"],
                             groups=groups or None, texts=window.texts,
                             prediction_labels=window.prediction_codes)
        if sampled:
            schema_add()
            schema_add = None
        latencies.append(pd.to_numeric(window.meta["latency_ms"], errors="coerce").to_numpy(
            dtype=float))
        error_parts.append(window.meta["error"].to_numpy(dtype=bool))
        if fallback_counts is not None and window.fallback_reasons is not None:
            # "" counts the rows the model answered itself (null: no fallback); only the
            # few others are counted by value (filling a million nulls with "" to count
            # them took three times as long).
            why = window.fallback_reasons
            answered_itself = why.isna().to_numpy()
            fallback_counts.update(why[~answered_itself].value_counts().to_dict())
            if answered_itself.any():
                fallback_counts[""] += int(np.count_nonzero(answered_itself))
        codes = version_codes.codes(window.meta["model_version"], window.version_codes)
        code_parts.append(codes)
        answered_rows = (~window.meta["error"].to_numpy(dtype=bool)
                         & window.meta["prediction"].notna().to_numpy())
        answered_parts.append(answered_rows[keep] if sampled else answered_rows)
        for c, (ids, _) in groups.items():
            seg_ids[c].append(ids[keep] if sampled else ids)
        drift_code_parts.append(codes[keep] if sampled else codes)
        if features_only:
            continue
        perf_part, prob_part = _perf_frames(window, answered_rows)
        if sampled:
            answered = keep[answered_rows]
            perf_part, prob_part = perf_part[answered], prob_part[answered]
        perf_parts.append(perf_part)
        prob_parts.append(prob_part)
    drift_frame, perf, prob_frame = _joined(drift_parts), _joined(perf_parts), _joined(prob_parts)
    pred_codes = label_codes = None
    if schema.task == "classification" and "prediction" in perf:
        # Class labels as text once, for performance, its estimate, versions and
        # segments (each conversion is a pass over a million values).
        pred_codes = _answered_codes(window.prediction_codes if window else None,
                                     answered_parts, sampled)
        label_codes = _answered_codes(window.label_codes if window else None,
                                      answered_parts, sampled)
        perf = pd.DataFrame({"prediction": _as_text(perf["prediction"], pred_codes),
                             "label": _as_text(perf["label"], label_codes)}, copy=False)
        # The values as logged (the parts, and the loop's last one): no check reads them.
        perf_parts.clear()
        perf_part = None
    latency = np.concatenate(latencies) if latencies else np.array([], dtype=float)
    error_flags = np.concatenate(error_parts) if error_parts else np.array([], dtype=bool)
    # What the preparation freed (the values as logged, the parts) handed back before
    # the sections' temporaries: 10 MB less at a 1M-row check's peak.
    free_memory()

    prepared: list[EstimateRows] = []
    coded: list[ClassRows] = []

    def class_rows() -> ClassRows | None:
        """A classifier's answered predictions and labels coded once, for performance,
        its estimate and versions."""
        if schema.task != "classification" or "prediction" not in perf:
            return None
        if not coded:
            # label_text's texts already (above), or their codes, from the read.
            coded.append(ClassRows.of_codes(pred_codes, label_codes)
                         if pred_codes is not None and label_codes is not None
                         else ClassRows.of(perf["prediction"], perf["label"], texts=True))
        return coded[0]

    def estimate_rows() -> EstimateRows | None:
        """The answered rows as the accuracy estimate reads them, prepared once for the
        performance and versions sections (a classifier's, when it logs probabilities)."""
        estimator = reference.estimator if reference is not None else None
        if (schema.task != "classification" or estimator is None
                or not len(prob_frame.columns) or "prediction" not in perf):
            return None
        if not prepared:
            prepared.append(estimator.rows(prob_frame, perf["prediction"], class_rows()))
        return prepared[0]

    def performance() -> PerformanceResult:
        ref = need_reference()
        labels = perf["label"] if "label" in perf else pd.Series([], dtype=object)
        preds = perf["prediction"] if "prediction" in perf else pd.Series([], dtype=object)
        probs = prob_frame if len(prob_frame.columns) else None
        inputs = None
        if schema.task == "regression":
            # Only a regressor's loss estimate reads the inputs: a classifier's check does
            # not copy the answered rows of the drift frame (a million rows, 0.3 s).
            inputs = drift_frame[_concat(answered_parts).astype(bool)] if answered_parts \
                else drift_frame
            inputs = inputs.reset_index(drop=True)
        return _performance(model, ref.metrics, ref, preds, labels, probs, end=end, now=now,
                            inputs=inputs, as_text=True, estimate_rows=estimate_rows(),
                            classes=class_rows())

    def service() -> ServiceResult:
        from monitor.checks.health import check_service

        return check_service(pd.Series(latency), pd.Series(error_flags),
                             window_seconds=(end - start).total_seconds(),
                             config=model_cfg.service, fallback_counts=fallback_counts)

    def segments() -> SegmentsResult:
        if seg_problem:
            raise ConfigError(seg_problem)
        parts = [labeler.segmentation(_concat(seg_ids[c]), seg_cfg.max_values)
                 for c, labeler in labelers.items()]
        return _segments(model, parts, schema_acc, drift_frame, perf, prob_frame,
                         _concat(answered_parts).astype(bool), need_reference(),
                         end=end, now=now)

    def multivariate() -> MultivariateResult:
        from monitor.checks.multivariate import check_multivariate

        sample = need_reference().multivariate
        if sample is None:
            raise RuntimeError("the reference profile holds no row sample")
        return check_multivariate(sample, drift_frame, config=model_cfg.multivariate,
                                  seed=_seed(model.name, start))

    def versions() -> VersionsResult:
        from monitor.checks.versions import check_versions

        ref = reference
        pred_name = schema.prediction_column
        drift_codes = _concat(drift_code_parts, np.int32)
        rows_of = VersionRows(
            names=tuple(version_codes.names), codes=_concat(code_parts, np.int32),
            errors=error_flags,
            latency_ms=latency, answered=drift_codes[_concat(answered_parts).astype(bool)],
            drift=drift_codes)
        empty = pd.Series([], dtype=object)
        return check_versions(
            rows_of,
            predictions=perf.get("prediction", empty),
            labels=perf.get("label", empty),
            probabilities=prob_frame if len(prob_frame.columns) else None,
            # Picked by masks only: its index does not matter, and is not renumbered
            # (``reset_index`` copied the million predictions).
            drift_predictions=(drift_frame[pred_name]
                               if pred_name is not None and pred_name in drift_frame else None),
            schema=schema, profile=ref.drift_profile if ref else None,
            estimator=ref.estimator if ref else None,
            reference_accuracy=ref.metrics.get("accuracy") if ref else None,
            drift_config=model_cfg.drift, config=model_cfg.performance, window_end=end,
            now=now, estimate_rows=estimate_rows(), classes=class_rows())

    # See ``evaluate_window``: drift runs on the pool's thread (a window read in chunks
    # starts it now, its sample whole); the other sections are taken in turn by this
    # thread and, once drift is done, the pool's: each takes the next as it finishes one
    # (the longest first), so that neither waits for the other at the end.
    if drift_done is None:
        drift_done = pool.submit(_section, drift_of(drift_frame, None))
    turns: deque[tuple[str, Callable[[], Section | None]]] = deque()
    if not features_only:
        # Made once, before either reader starts. A failure here is raised again, and
        # recorded, by each section that needs them.
        with suppress(Exception):
            class_rows()
            estimate_rows()
        turns.append(("performance", partial(_section, performance)))
    if schema_add is not None:  # a window read whole (else each chunk was checked)
        turns.append(("schema", schema_add))
    if not features_only:
        turns.append(("versions", partial(_section, versions)))
    turns.append(("service", partial(_section, service)))
    done: dict[str, Section] = {}

    def take_turns() -> None:
        while turns:
            try:
                name, compute = turns.popleft()
            except IndexError:  # the other thread took the last one
                return
            result = compute()
            if result is not None:  # the schema check's result is the accumulator's
                done[name] = result

    pool_turns = pool.submit(take_turns)
    take_turns()
    pool_turns.result()
    not_applicable = NotApplicable(FEATURES_ONLY)
    schema_result = schema_acc.result(model_cfg.min_rows)
    sections: dict[str, Section] = {
        "schema": schema_result, "drift": drift_done.result(),
        "performance": done.get("performance", not_applicable),
        "service": done["service"], "versions": done.get("versions", not_applicable)}
    prepared.clear()  # versions was the last reader
    coded.clear()
    if seg_cfg.columns:
        sections["segments"] = _section(segments)
    if model_cfg.multivariate.enabled:
        sections["multivariate"] = _section(multivariate)
    status = overall_status(sections.values(), rows, model_cfg.min_rows)
    reasons: list[str] = []
    if status == "insufficient_data":
        reasons.append(f"{rows} rows < min_rows {model_cfg.min_rows}")
    for name, sec in sections.items():
        if isinstance(sec, ErrorSection):
            reasons.append(f"{name}: could not run: {sec.error}")
        elif sec.status in ("warn", "critical"):
            reasons += [f"{name}: {r}" for r in sec.reasons]
    return CheckRun(
        model=model.name, start=start, end=end, rows=rows, status=status,
        reasons=tuple(reasons), config_hash=model.config_hash,
        reference_version=reference.version if reference else None,
        schema=schema_result, drift=sections["drift"],  # type: ignore[arg-type]
        performance=sections["performance"],  # type: ignore[arg-type]
        service=sections["service"],  # type: ignore[arg-type]
        segments=sections.get("segments"),  # type: ignore[arg-type]
        multivariate=sections.get("multivariate"),  # type: ignore[arg-type]
        versions=sections["versions"],  # type: ignore[arg-type]
        sampled=sampled, sample_rows=len(drift_frame) if sampled else None,
    )


def _performance(model: ResolvedModel, reference_metrics: Mapping[str, float | None],
                 ref: ReferenceData, preds: pd.Series, labels: pd.Series,
                 probs: pd.DataFrame | None, *, end: datetime, now: datetime,
                 config: PerformanceConfig | None = None, segment: bool = False,
                 inputs: pd.DataFrame | None = None, as_text: bool = False,
                 estimate_rows: EstimateRows | None = None,
                 classes: ClassRows | None = None) -> PerformanceResult:
    """Realized and estimated performance of answered rows (predictions, labels, and
    probabilities when logged) against ``reference_metrics``: the whole reference's, or
    with ``segment`` a segment's reference rows' (then the estimate is judged against
    their accuracy too). A regressor's loss is estimated from ``inputs`` (the answered
    rows' drift frame, aligned with ``preds``); without them it is not estimated (a
    segment's performance: the loss models are the whole reference's). ``as_text``: a
    classifier's predictions and labels are ``label_text``'s already. ``estimate_rows``:
    ``preds`` and ``probs`` as the accuracy estimator prepared them, and ``classes``
    ``preds`` and ``labels`` as ``ClassRows.of`` coded them, when at hand."""
    from dataclasses import replace

    from monitor.checks.estimated import check_estimated, with_estimate
    from monitor.checks.performance import check_performance

    schema, perf_cfg = model.schema, config or model.config.performance
    if schema.task == "classification" and not as_text:
        preds, labels = label_text(preds), label_text(labels)
    result = check_performance(preds, labels, probs, dict(reference_metrics), schema,
                               config=perf_cfg, window_end=end, now=now, classes=classes)
    if schema.task == "regression" and inputs is not None:
        from monitor.checks.estimated_loss import check_estimated_loss

        est_loss = check_estimated_loss(
            ref.loss_estimator, inputs, preds,
            realized_mae=result.metrics.get("mae") if result.labelled_rows else None,
            config=perf_cfg, unavailable=ref.estimator_error)
        return with_estimate(result, est_loss)
    if schema.task != "classification":
        return result
    realized = result.metrics.get("accuracy") if result.labelled_rows else None
    estimator = ref.estimator
    accuracy = reference_metrics.get("accuracy")
    if estimator is not None and accuracy is not None and segment:
        estimator = replace(estimator, reference_accuracy=accuracy)
    est = check_estimated(estimator, probs, preds, realized_accuracy=realized,
                          config=perf_cfg, unavailable=ref.estimator_error,
                          rows=estimate_rows if estimator is ref.estimator else None)
    return with_estimate(result, est)


# Judged per segment: accuracy (and a regressor's errors), not f1 or roc_auc, which a
# segment's few positives make noise (0.11 of f1 "drop" on a clean 1,200-row segment of
# the sample data's first week).
_SEGMENT_JUDGED = ("accuracy", "mae", "rmse")


def _segment_problem(model: ResolvedModel) -> str | None:
    """Why the model's segment columns cannot be used (``ConfigError``'s text), or None."""
    try:
        model.config.segments.check_columns({f.name: f.type for f in model.schema.features},
                                            str(model.config.schema_path))
    except ConfigError as exc:
        return str(exc)
    return None


def _segment_values(model: ResolvedModel, window: LogWindow, column: str) -> pd.Series:
    """A chunk's values of a segment column: model_version from the row (else the
    configured version, as ingest records it), a feature from the features."""
    import pandas as pd

    from monitor.config import MODEL_VERSION

    if column == MODEL_VERSION:
        values = window.meta["model_version"]
        return values if model.config.version is None else values.fillna(model.config.version)
    if column in window.features.columns:
        return window.features[column]
    return pd.Series([None] * window.rows, dtype=object)


def _concat(parts: list[np.ndarray], empty: type = int) -> np.ndarray:
    """The parts as one array: a window read whole is its one part, not a copy; no parts
    make an empty array of ``empty``'s type."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=empty)


def _segments(model: ResolvedModel, parts: list[Segmentation], schema_acc: SchemaAccumulator,
              drift_frame: pd.DataFrame, perf: pd.DataFrame, prob_frame: pd.DataFrame,
              answered: np.ndarray, ref: ReferenceData, *, end: datetime, now: datetime
              ) -> SegmentsResult:
    """The segment checks over the rows drift and performance saw (the window, or its
    sample), the schema's from the window's one pass."""
    from monitor.checks.segments import check_segments
    from monitor.run.segments import segment_lookup

    schema, model_cfg = model.schema, model.config
    perf_cfg = model_cfg.performance.model_copy(update={"allowed_drop": {
        k: v for k, v in model_cfg.performance.allowed_drop.items() if k in _SEGMENT_JUDGED}})

    def performance(against: SegmentReference, preds: pd.Series, labels: pd.Series,
                    probs: pd.DataFrame | None) -> PerformanceResult:
        # A classifier's predictions and labels are text already (``evaluate_window``).
        return _performance(model, against.metrics, ref, preds, labels, probs, end=end,
                            now=now, config=perf_cfg, segment=not against.whole, as_text=True)

    features_only = schema.features_only
    return check_segments(
        parts, drift_kinds=drift_columns(schema),
        schema_of=lambda column, ids: schema_acc.group_result(column, ids),
        drift_frame=drift_frame, answered=answered,
        performance_frame=None if features_only or "prediction" not in perf else perf,
        probabilities=prob_frame if len(prob_frame.columns) else None,
        reference=segment_lookup(model, ref), seed=_seed(model.name, end),
        performance=None if features_only else performance, schema=schema, config=model_cfg)
