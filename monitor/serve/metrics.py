"""Prometheus metrics, read from the store at scrape time.

``StoreCollector`` is a custom collector: every scrape reads the latest results from
the store and yields ``GaugeMetricFamily``/``CounterMetricFamily`` built from them, so
every replica of the service reports the same numbers and nothing is kept in memory
between scrapes. ``build_registry`` registers it in a fresh ``CollectorRegistry``
(never the global default); the API serves ``generate_latest(registry)`` at /metrics.
The metrics themselves are declared in ``monitor.serve.metric_specs``.

One scrape is one snapshot of the store (``monitor.store.reads.scrape_snapshot``: at
most five queries on one connection, whatever the number of models and features): the
latest check run of every configured model, the version its window's logs carry, the
check runs counted by status, the models' stored flags, and what retention last did.

Figures come from the latest run, read back as the typed ``CheckRun`` rather than from
``run_metrics``: it is the same data (``CheckRun.metrics()`` derives those rows from it
in the same transaction), and it also says which sections failed, which drift tests
could not run and their thresholds, in one row per model. A check that could not run
(an ``error`` section, a missing section, a figure stored as null) has no series:
absent, never zero. The fallback gauges come from the model's stored flag through
``monitor.fallback.flag.served``, as the flag document computes them, without writing.

Labels: ``model``; ``version`` on the figures of the latest run: the version the
newest log of its window carries, else the model's configured ``version``, else "";
``feature`` (bounded) on per-feature figures: only the prediction column and the
features of the model's contract, in that order, at most ``serve.max_feature_labels``
per model; every other feature name is left out and counted in
``mqm_feature_labels_dropped``; ``segment`` (bounded) on per-segment figures:
``column=value`` of the latest run's segments (at most ``segments.max_values`` + 1 per
column by construction), at most ``serve.max_segment_labels`` per model, the rest counted
in ``mqm_segment_labels_dropped``. Other labels take values from fixed sets (statuses,
checks, percentiles, metric names). Store-level state (runs, fallback, last success)
is labelled by ``model`` only, so it does not split when the version changes.

Units are base units: seconds (latency is stored in milliseconds and converted),
ratios 0..1 (``_ratio``), Unix times (``_timestamp_seconds``).

A failing query never raises out of ``collect()``: it is logged and the scrape answers
``mqm_scrape_error 1``, its duration and this process's counters alone. A model whose
figures cannot be built (an unreadable contract, an unexpected document) is logged, left
out or reduced, and also sets ``mqm_scrape_error 1``; the other models are exported. A
latest run whose document cannot be read back as a run keeps the series that come from
its row (status, rows, window end, finish time) and loses the others.

``mqm metrics reference`` prints the metric reference (the README's table).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.alerting import post_failures
from monitor.config import Config, ModelConfig
from monitor.fallback.flag import served
from monitor.results import (
    CheckRun,
    DriftResult,
    EstimatedLossResult,
    EstimatedResult,
    MultivariateResult,
    PerformanceResult,
    SchemaResult,
    SegmentsResult,
    ServiceResult,
    VersionsResult,
)
from monitor.serve.metric_specs import (
    CHECK_STATUSES,
    ESTIMATED_METRICS,
    MAX_VERSION_LABELS,
    METRICS,
    PERCENTILES,
    PERFORMANCE_METRICS,
    RETENTION_TABLES,
    RUN_STATUSES,
    SEGMENT_STATUSES,
    MetricSpec,
    metric_reference,
)
from monitor.store.db import Engine
from monitor.store.flags import StoredFlag
from monitor.store.reads import ScrapeSnapshot, scrape_snapshot
from monitor.store.retention import RetentionRow
from monitor.store.runs import RunRecord

__all__ = [
    "CHECK_STATUSES",
    "METRICS",
    "PERFORMANCE_METRICS",
    "RUN_STATUSES",
    "MetricSpec",
    "StoreCollector",
    "build_registry",
    "metric_reference",
]

_log = logging.getLogger("mqm.metrics")

_Sample = tuple[str, tuple[str, ...], float]


def _number(value: Any) -> float | None:
    """A stored figure as a float; None (absent) for null, non-numbers and NaN/inf."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class _ModelSamples:
    """Samples of one model, kept apart until the model is complete."""

    def __init__(self) -> None:
        self.samples: list[_Sample] = []

    def put(self, name: str, labels: tuple[str, ...], value: Any) -> None:
        number = _number(value)
        if number is not None:
            self.samples.append((name, labels, number))

    def state_set(self, name: str, labels: tuple[str, ...], states: Iterable[str],
                  current: str) -> None:
        for state in states:
            self.samples.append((name, (*labels, state), float(state == current)))


class StoreCollector(Collector):
    """Exports the store's latest results at every scrape (see the module docstring).

    ``collect()`` never raises: a failing query is logged and reported as
    ``mqm_scrape_error 1``. ``clock`` returns the scrape's time (aware UTC) for
    staleness and ``mqm_seconds_since_last_success``; tests inject it.
    """

    def __init__(self, engine: Engine, config: Config,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        # model -> ((schema path, mtime_ns), feature labels): a scrape stats the contract
        # file and parses it again only when it changed.
        self._contracts: dict[str, tuple[tuple[str, int], tuple[str, ...]]] = {}

    def describe(self) -> Iterator[Metric]:
        """The families without samples: lets the registry check names without a query."""
        yield from _families({})

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        error = False
        samples: list[_Sample] = []
        try:
            snap, now = self._snapshot(), self._clock()
        except Exception:
            _log.exception("mqm: metrics: reading the store failed")
            snap, now, error = None, None, True
        if snap is not None and now is not None:
            for model in self._config.models:
                try:
                    part, ok = self._model(model, snap, now)
                except Exception:
                    _log.exception("mqm: metrics: model %s: building its metrics failed", model)
                    error = True
                    continue
                samples += part
                error = error or not ok
        samples.append(("mqm_alert_post_failures_total", (), float(post_failures())))
        samples.append(("mqm_scrape_error", (), float(error)))
        samples.append(("mqm_scrape_duration_seconds", (), time.perf_counter() - started))
        grouped: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        for name, labels, value in samples:
            grouped.setdefault(name, []).append((labels, value))
        yield from _families(grouped)

    def _snapshot(self) -> ScrapeSnapshot:
        # Only mqm's own table is ours to read; a user's source is not queried at scrape time.
        own = {m for m, cfg in self._config.models.items() if cfg.source.kind == "builtin"}
        return scrape_snapshot(self._engine, list(self._config.models), versioned=own)

    def _feature_labels(self, model: str) -> tuple[str, ...]:
        """The prediction column (if any) and the contract's features, in that order
        (cached)."""
        from monitor.schema import load_schema

        path = self._config.model(model).schema_path
        key = (str(path), path.stat().st_mtime_ns)
        cached = self._contracts.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        schema = load_schema(path)
        names = tuple(dict.fromkeys([*filter(None, [schema.prediction_column]),
                                     *schema.feature_names]))
        self._contracts[model] = (key, names)
        return names

    def _model(self, model: str, snap: ScrapeSnapshot,
               now: datetime) -> tuple[list[_Sample], bool]:
        """One model's samples, and whether they are complete."""
        cfg = self._config.model(model)
        out = _ModelSamples()
        ok = True
        try:
            contract = self._feature_labels(model)
        except Exception as exc:
            # Without the contract no feature name is known to be bounded: none is exported.
            _log.warning("mqm: metrics: model %s: no per-feature metrics: %s", model, exc)
            contract, ok = (), False
        kept = frozenset(contract[: self._config.serve.max_feature_labels])
        seen = set(contract)

        segments_dropped = 0
        record = snap.runs.get(model)
        if record is not None:
            base = (model, snap.versions.get(model) or cfg.version or "")
            _row_samples(out, record, base)
            try:
                run = record.run
            except (ValueError, TypeError) as exc:
                # Only what the row's columns say is exported.
                _log.warning("mqm: metrics: model %s: run %d: its document cannot be read "
                             "back: %s", model, record.id, exc)
                ok = False
            else:
                assert run is not None  # the latest run is a check run
                seen |= _run_samples(out, run, base, kept)
                segments_dropped = _segment_samples(out, run, base,
                                                    self._config.serve.max_segment_labels)

        counts = snap.counts.get(model, {})
        for status in RUN_STATUSES:
            out.put("mqm_runs_total", (model, status), counts.get(status, 0))
        _flag_samples(out, model, snap.flags.get(model), cfg, now)
        _retention_samples(out, model, snap.retention.get(model))
        out.put("mqm_feature_labels_dropped", (model,), len(seen - kept))
        out.put("mqm_segment_labels_dropped", (model,), segments_dropped)
        return out.samples, ok


def _retention_samples(out: _ModelSamples, model: str, row: RetentionRow | None) -> None:
    """Rows retention deleted (0 before its first pass), when it last ran, its horizon."""
    deleted = (0, 0, 0) if row is None else (row.logs_deleted, row.labels_deleted,
                                              row.blocks_deleted)
    for table, count in zip(RETENTION_TABLES, deleted, strict=True):
        out.put("mqm_retention_deleted_rows_total", (model, table), count)
    if row is not None:
        out.put("mqm_retention_last_run_timestamp_seconds", (model,), row.last_run_at.timestamp())
        if row.horizon is not None:
            out.put("mqm_retention_horizon_timestamp_seconds", (model,),
                    row.horizon.timestamp())


def _row_samples(out: _ModelSamples, record: RunRecord, base: tuple[str, str]) -> None:
    """The latest run's series that come from its row, not its document."""
    out.state_set("mqm_run_status", base, RUN_STATUSES, record.status)
    out.put("mqm_run_window_end_timestamp_seconds", base, record.window_end.timestamp())
    out.put("mqm_run_timestamp_seconds", base, record.finished_at.timestamp())
    out.put("mqm_rows_checked", base, record.rows)


def _run_samples(out: _ModelSamples, run: CheckRun, base: tuple[str, str],
                 kept: frozenset[str]) -> set[str]:
    """The latest run's figures; returns every feature name the run carries."""
    seen: set[str] = set()

    def feature(name: str, column: str, value: Any) -> None:
        seen.add(column)
        if column in kept:
            out.put(name, (*base, column), value)

    for check, sec in run.sections.items():
        out.state_set("mqm_check_status", (*base, check), CHECK_STATUSES, sec.status)
    if run.status == "insufficient_data":
        # Too few rows to judge: figures of such a window are no evidence, and absent
        # series cannot page (a null-rate change of an empty window is minus the
        # reference's, its drift share 0).
        return seen

    schema = run.section("schema")
    if isinstance(schema, SchemaResult):
        out.put("mqm_schema_violation_ratio", base, schema.violation_rate)
        out.put("mqm_schema_missing_columns", base, len(schema.missing_columns))
        out.put("mqm_schema_unexpected_columns", base, len(schema.unexpected_columns))
        for col in schema.columns:
            if col.state == "present":
                feature("mqm_schema_feature_violation_ratio", col.column, col.violation_rate)
                feature("mqm_schema_type_mismatch_ratio", col.column, col.type_mismatch_rate)
                feature("mqm_schema_null_ratio", col.column, col.null_rate)
                feature("mqm_schema_out_of_range_ratio", col.column, col.out_of_range_rate)

    drift = run.section("drift")
    if isinstance(drift, DriftResult):
        out.put("mqm_drifted_features_ratio", base, drift.share_drifted)
        out.put("mqm_dataset_drift", base, drift.dataset_drift)
        for feat in drift.features:
            if not feat.error:  # an untested column has no score and did not drift
                feature("mqm_drift_score", feat.feature, feat.score)
                feature("mqm_drift_threshold", feat.feature, feat.threshold)
                feature("mqm_drift_detected", feat.feature, feat.drifted)
            feature("mqm_null_rate_change_ratio", feat.feature, feat.null_rate_change)
            feature("mqm_unseen_category_ratio", feat.feature, feat.unseen_share)

    perf = run.section("performance")
    if isinstance(perf, PerformanceResult):
        out.put("mqm_label_coverage_ratio", base, perf.label_coverage)
        out.put("mqm_labels_mature", base, perf.mature)
        out.put("mqm_accuracy_ratio", base, perf.metrics.get("accuracy"))
        out.put("mqm_accuracy_drop_ratio", base, perf.drops.get("accuracy"))
        for name in PERFORMANCE_METRICS:
            out.put("mqm_performance_metric", (*base, name), perf.metrics.get(name))
            out.put("mqm_performance_metric_drop", (*base, name), perf.drops.get(name))
        est = perf.estimated
        if isinstance(est, EstimatedResult):
            out.put("mqm_estimated_accuracy_ratio", base, est.estimated_accuracy)
            out.put("mqm_estimated_accuracy_drop_ratio", base, est.drop)
            out.put("mqm_estimated_accuracy_sampling_error_ratio", base, est.sampling_error)
            out.put("mqm_estimated_accuracy_lower_ratio", base, est.lower_bound)
            out.put("mqm_estimated_accuracy_upper_ratio", base, est.upper_bound)
            out.put("mqm_estimated_performance_metric_drop", (*base, "accuracy"), est.drop)
            if est.status != "skipped":
                out.put("mqm_estimated_calibrated_classes", base, len(est.calibrated))
        elif isinstance(est, EstimatedLossResult):
            out.put("mqm_estimated_performance_metric_drop", (*base, "mae"), est.rise)
        if est is not None:
            for name in ESTIMATED_METRICS:
                out.put("mqm_estimated_performance_metric", (*base, name),
                        est.metrics.get(name))
                out.put("mqm_estimated_performance_metric_sampling_error", (*base, name),
                        est.sampling_errors.get(name))
                out.put("mqm_estimated_performance_metric_lower", (*base, name),
                        est.lower_bounds.get(name))
                out.put("mqm_estimated_performance_metric_upper", (*base, name),
                        est.upper_bounds.get(name))

    service = run.section("service")
    if isinstance(service, ServiceResult):
        for pct in PERCENTILES:
            ms = _number(getattr(service, f"latency_p{pct}_ms"))
            out.put("mqm_latency_seconds", (*base, pct), None if ms is None else ms / 1000)
        out.put("mqm_error_ratio", base, service.error_rate)
        out.put("mqm_throughput_requests_per_second", base, service.throughput_per_s)
        out.put("mqm_fallback_answer_ratio", base, service.fallback_rate)

    multivariate = run.section("multivariate")
    if isinstance(multivariate, MultivariateResult) and multivariate.auc is not None:
        for name in ("auc", "auc_lower", "auc_upper", "auc_threshold",
                     "reconstruction_error", "reconstruction_lower", "reconstruction_upper"):
            out.put(f"mqm_multivariate_{name}", base, getattr(multivariate, name))
        for imp in multivariate.top_features:
            feature("mqm_multivariate_feature_importance", imp.feature, imp.importance)
    versions = run.section("versions")
    if isinstance(versions, VersionsResult):
        for ver in versions.versions[:MAX_VERSION_LABELS]:  # most rows first
            labels = (*base, ver.version)
            out.put("mqm_model_version_rows", labels, ver.rows)
            out.put("mqm_model_version_accuracy_ratio", labels, ver.accuracy)
            out.put("mqm_model_version_estimated_accuracy_ratio", labels,
                    ver.estimated_accuracy)
            out.put("mqm_model_version_error_ratio", labels, ver.error_rate)
            p95 = _number(ver.latency_p95_ms)
            out.put("mqm_model_version_latency_p95_seconds", labels,
                    None if p95 is None else p95 / 1000)
            out.put("mqm_model_version_prediction_drift_detected", labels,
                    ver.prediction_drifted)
    return seen


def _segment_samples(out: _ModelSamples, run: CheckRun, base: tuple[str, str],
                     limit: int) -> int:
    """The latest run's figures per segment, for its first ``limit`` segments (each column's
    most frequent values first); returns how many segments were left out."""
    sec = run.section("segments")
    if not isinstance(sec, SegmentsResult) or run.status == "insufficient_data":
        return 0
    for seg in sec.segments[:limit]:
        labels = (*base, seg.key)
        out.state_set("mqm_segment_status", labels, SEGMENT_STATUSES, seg.status)
        out.put("mqm_segment_rows_checked", labels, seg.rows)
        if isinstance(seg.drift, DriftResult):
            out.put("mqm_segment_drifted_features_ratio", labels, seg.drift.share_drifted)
        if isinstance(seg.schema, SchemaResult):
            out.put("mqm_segment_schema_violation_ratio", labels, seg.schema.violation_rate)
        if isinstance(seg.performance, PerformanceResult):
            out.put("mqm_segment_accuracy_ratio", labels,
                    seg.performance.metrics.get("accuracy"))
            est = seg.performance.estimated
            if isinstance(est, EstimatedResult):
                out.put("mqm_segment_estimated_accuracy_ratio", labels, est.estimated_accuracy)
    return max(0, len(sec.segments) - limit)


def _flag_samples(out: _ModelSamples, model: str, state: StoredFlag | None,
                  cfg: ModelConfig, now: datetime) -> None:
    """The served flag as the flag document computes it, without its writes."""
    labels = (model,)
    if state is None:
        # Reading the flag would create the row now: off, automatic, not stale.
        for name in ("mqm_fallback_active", "mqm_fallback_manual", "mqm_fallback_stale"):
            out.put(name, labels, 0)
        return
    flag, stale = served(state, cfg, now)
    out.put("mqm_fallback_active", labels, flag.active)
    out.put("mqm_fallback_manual", labels, flag.source == "manual")
    out.put("mqm_fallback_stale", labels, stale)
    if flag.source == "manual" and flag.expires_at is not None:
        out.put("mqm_fallback_override_expiry_timestamp_seconds", labels,
                flag.expires_at.timestamp())
    last_success = state.auto.last_success_at
    if last_success is not None:
        out.put("mqm_last_success_timestamp_seconds", labels, last_success.timestamp())
        out.put("mqm_seconds_since_last_success", labels, (now - last_success).total_seconds())


def _families(grouped: dict[str, list[tuple[tuple[str, ...], float]]]) -> Iterator[Metric]:
    """Every declared family in ``METRICS`` order, with its samples (if any)."""
    for spec in METRICS:
        family: GaugeMetricFamily | CounterMetricFamily
        if spec.kind == "counter":
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
        else:
            family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        for labels, value in grouped.get(spec.name, ()):
            family.add_metric(labels, value)
        yield family


def build_registry(engine: Engine, config: Config,
                   clock: Callable[[], datetime] | None = None) -> CollectorRegistry:
    """A fresh registry holding a ``StoreCollector`` (never the global default registry);
    serve it with ``prometheus_client.generate_latest(registry)``."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(engine, config, clock))
    return registry
