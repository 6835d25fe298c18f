"""Prometheus metrics, read from the store at scrape time.

``StoreCollector`` is a custom collector: every scrape reads the latest results from
the store and yields ``GaugeMetricFamily``/``CounterMetricFamily`` built from them, so
every replica of the service reports the same numbers and nothing is kept in memory
between scrapes. ``build_registry`` registers it in a fresh ``CollectorRegistry``
(never the global default); the API serves ``generate_latest(registry)`` at /metrics.

One scrape is at most four queries on one connection (a repeatable-read snapshot on
PostgreSQL), whatever the number of models and features:

1. the latest check run of every configured model: its newest window (and the newest
   run of that window, so a recheck of the same window wins and a recheck of an older
   window does not), as a UNION ALL of one index seek per model, with the run's stored
   document (``check_runs.summary``, the ``mqm check --json`` document);
2. for models reading mqm's own log table, the version carried by the newest log of
   that run's window (one index seek per model);
3. check runs counted by model and status (``mqm_runs_total``);
4. the models' ``fallback_state`` rows.

Figures come from the run's stored document rather than ``run_metrics``: it is the
same data (``CheckRun.metrics()`` derives those rows from it in the same transaction),
and it also says which sections failed, which drift tests could not run and their
thresholds, in one row per model. A check that could not run (an ``error`` section,
a missing section, a figure stored as null) has no series: absent, never zero. The
fallback gauges come from the model's ``fallback_state`` row through
``monitor.fallback.flag.served``, as ``monitor.fallback.flag_document`` computes them, without
its writes.

Labels: ``model``; ``version`` on the figures of the latest run: the version the
newest log of its window carries, else the model's configured ``version``, else "";
``feature`` (bounded) on per-feature figures: only the prediction column and the
features of the model's contract, in that order, at most ``serve.max_feature_labels``
per model; every other feature name is left out and counted in
``mqm_feature_labels_dropped``. Other labels take values from fixed sets (statuses,
checks, percentiles, metric names). Store-level state (runs, fallback, last success)
is labelled by ``model`` only, so it does not split when the version changes.

Units are base units: seconds (latency is stored in milliseconds and converted),
ratios 0..1 (``_ratio``), Unix times (``_timestamp_seconds``).

A failing query never raises out of ``collect()``: it is logged and the scrape answers
``mqm_scrape_error 1`` (and its duration) alone. A model whose figures cannot be built
(an unreadable contract, an unexpected document) is logged, left out or reduced, and
also sets ``mqm_scrape_error 1``; the other models are exported.

``mqm metrics reference`` prints the metric reference (the README's table).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Engine

from monitor.config import Config, ModelConfig
from monitor.fallback.flag import served, state_of
from monitor.store.tables import check_runs, fallback_state, inference_logs

__all__ = [
    "METRICS",
    "RUN_STATUSES",
    "MetricSpec",
    "StoreCollector",
    "build_registry",
    "metric_reference",
]

_log = logging.getLogger("mqm.metrics")

# The fixed value sets of the non-free labels (bounded cardinality).
RUN_STATUSES = ("ok", "warn", "critical", "insufficient_data", "error")
CHECKS = ("schema", "drift", "performance", "service")
CHECK_STATUSES = ("ok", "warn", "critical", "skipped", "insufficient_data", "error")
PERCENTILES = ("50", "95", "99")
# monitor.checks.performance's CLASSIFICATION_METRICS + REGRESSION_METRICS, repeated here
# so that a scrape does not import pandas; a test keeps them equal.
PERFORMANCE_METRICS = ("accuracy", "f1", "roc_auc", "mae", "rmse")


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: the collector builds it and the README reference lists it."""

    name: str
    kind: Literal["gauge", "counter"]
    labels: tuple[str, ...]
    unit: str
    help: str


_RUN = ("model", "version")
_FEATURE = ("model", "version", "feature")
_MODEL = ("model",)

METRICS: tuple[MetricSpec, ...] = (
    # The latest check run.
    MetricSpec("mqm_run_status", "gauge", (*_RUN, "status"), "1 or 0",
               "Status of the latest check run: 1 for its status, 0 for the others "
               "(ok, warn, critical, insufficient_data, error)."),
    MetricSpec("mqm_check_status", "gauge", (*_RUN, "check", "status"), "1 or 0",
               "Status of each section (schema, drift, performance, service) of the latest "
               "run: 1 for its status, 0 for the others (ok, warn, critical, skipped, "
               "insufficient_data, error)."),
    MetricSpec("mqm_run_window_end_timestamp_seconds", "gauge", _RUN, "Unix seconds",
               "End of the window the latest run checked."),
    MetricSpec("mqm_run_timestamp_seconds", "gauge", _RUN, "Unix seconds",
               "When the latest run finished."),
    MetricSpec("mqm_rows_checked", "gauge", _RUN, "rows",
               "Log rows in the latest run's window."),
    # schema
    MetricSpec("mqm_schema_violation_ratio", "gauge", _RUN, "ratio",
               "Share of rows with at least one contract violation."),
    MetricSpec("mqm_schema_feature_violation_ratio", "gauge", _FEATURE, "ratio",
               "Share of rows violating the contract in this column (null, type, range or "
               "category)."),
    MetricSpec("mqm_schema_missing_columns", "gauge", _RUN, "columns",
               "Contract columns absent from the whole window."),
    MetricSpec("mqm_schema_unexpected_columns", "gauge", _RUN, "columns",
               "Columns in the window that the contract does not know."),
    # drift
    MetricSpec("mqm_drift_score", "gauge", _FEATURE, "the method's",
               "Drift test score of the column against the reference (a p-value or a "
               "distance, by the column's method); absent when the column was not tested."),
    MetricSpec("mqm_drift_threshold", "gauge", _FEATURE, "the method's",
               "Threshold the column's score is judged against."),
    MetricSpec("mqm_drift_detected", "gauge", _FEATURE, "1 or 0",
               "1 when the column drifted; absent when it was not tested."),
    MetricSpec("mqm_drifted_features_ratio", "gauge", _RUN, "ratio",
               "Share of tested columns that drifted."),
    MetricSpec("mqm_dataset_drift", "gauge", _RUN, "1 or 0",
               "1 when the share of drifted columns reached drift_share."),
    MetricSpec("mqm_null_rate_change_ratio", "gauge", _FEATURE, "ratio",
               "Null rate of the column in the window minus in the reference (-1..1)."),
    MetricSpec("mqm_unseen_category_ratio", "gauge", _FEATURE, "ratio",
               "Share of the column's non-null values that are categories the reference "
               "lacks (categorical columns)."),
    # performance
    MetricSpec("mqm_accuracy_ratio", "gauge", _RUN, "ratio",
               "Accuracy on the window's labelled rows (classifiers)."),
    MetricSpec("mqm_accuracy_drop_ratio", "gauge", _RUN, "ratio",
               "Reference accuracy minus the window's (positive: worse)."),
    MetricSpec("mqm_estimated_accuracy_ratio", "gauge", _RUN, "ratio",
               "Accuracy estimated from the logged probabilities, without labels."),
    MetricSpec("mqm_estimated_accuracy_drop_ratio", "gauge", _RUN, "ratio",
               "Reference accuracy minus the estimated one (positive: worse)."),
    MetricSpec("mqm_label_coverage_ratio", "gauge", _RUN, "ratio",
               "Share of the window's predictions that have a label."),
    MetricSpec("mqm_labels_mature", "gauge", _RUN, "1 or 0",
               "1 when the window's labels are mature (enough coverage, or old enough), so "
               "accuracy is judged."),
    MetricSpec("mqm_performance_metric", "gauge", (*_RUN, "metric"), "the metric's",
               "Every realized metric (accuracy, f1, roc_auc: ratios; mae, rmse: the "
               "target's unit)."),
    MetricSpec("mqm_performance_metric_drop", "gauge", (*_RUN, "metric"), "the metric's",
               "Worsening against the reference (absolute for accuracy, f1, roc_auc; "
               "relative for mae, rmse; positive: worse)."),
    # service
    MetricSpec("mqm_latency_seconds", "gauge", (*_RUN, "percentile"), "seconds",
               "Latency percentile (50, 95, 99) of the window's requests."),
    MetricSpec("mqm_error_ratio", "gauge", _RUN, "ratio",
               "Share of the window's requests that failed."),
    MetricSpec("mqm_throughput_requests_per_second", "gauge", _RUN, "requests per second",
               "Requests in the window divided by its length."),
    MetricSpec("mqm_fallback_answer_ratio", "gauge", _RUN, "ratio",
               "Share of the window's requests the serving guard answered with the "
               "default prediction (mqm's own log table only)."),
    # Store-level state, per model.
    MetricSpec("mqm_runs_total", "counter", (*_MODEL, "status"), "runs",
               "Check runs stored, by status (counted in the store; pruning runs lowers "
               "it, which Prometheus takes as a counter reset)."),
    MetricSpec("mqm_fallback_active", "gauge", _MODEL, "1 or 0",
               "1 when the served fallback flag is on."),
    MetricSpec("mqm_fallback_manual", "gauge", _MODEL, "1 or 0",
               "1 when the served flag comes from a manual override."),
    MetricSpec("mqm_fallback_stale", "gauge", _MODEL, "1 or 0",
               "1 when no successful run was taken in for longer than stale_after."),
    MetricSpec("mqm_last_success_timestamp_seconds", "gauge", _MODEL, "Unix seconds",
               "When the last successful run (ok, warn or critical) was taken in; absent "
               "before the first."),
    MetricSpec("mqm_seconds_since_last_success", "gauge", _MODEL, "seconds",
               "Seconds from the last successful run to the scrape; absent before the first."),
    MetricSpec("mqm_feature_labels_dropped", "gauge", _MODEL, "features",
               "Feature names left out of the per-feature series (beyond "
               "serve.max_feature_labels, or not in the contract)."),
    # The scrape itself.
    MetricSpec("mqm_scrape_error", "gauge", (), "1 or 0",
               "1 when reading the store failed (only this and the duration are exported "
               "then) or a model's figures could not be built; see the service log."),
    MetricSpec("mqm_scrape_duration_seconds", "gauge", (), "seconds",
               "Time this scrape took to read the store and build the metrics."),
)

def metric_reference() -> str:
    """The README's metric reference: a Markdown table generated from ``METRICS``."""
    out = ["| metric | type | labels | unit | meaning |", "|---|---|---|---|---|"]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "none"
        out.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.unit} | {spec.help} |")
    return "\n".join(out) + "\n"


# --- reading the store ------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    model: str
    status: str
    rows: int
    window_start: datetime
    window_end: datetime
    finished_at: datetime
    summary: dict[str, Any]


@dataclass
class _Snapshot:
    runs: dict[str, _Run] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)  # fallback_state rows


def _one_per_model(parts: list[sa.Select[Any]]) -> sa.CompoundSelect | sa.Select[Any]:
    """UNION ALL of per-model ``ORDER BY ... LIMIT 1`` selects, each wrapped as a subquery
    (SQLite allows no ORDER BY/LIMIT inside a compound select)."""
    wrapped = [sa.select(*p.subquery().c) for p in parts]
    return wrapped[0] if len(wrapped) == 1 else sa.union_all(*wrapped)


def _read(conn: sa.Connection, config: Config) -> _Snapshot:
    models = list(config.models)
    snap = _Snapshot()
    if not models:
        return snap
    c = check_runs.c
    latest = _one_per_model([
        sa.select(c.id).where(c.model == m, c.kind == "check")
        .order_by(c.window_end.desc(), c.id.desc()).limit(1)
        for m in models
    ]).subquery()
    rows = conn.execute(
        sa.select(c.model, c.status, c.rows, c.window_start, c.window_end, c.finished_at,
                  c.summary).where(c.id.in_(sa.select(latest.c.id)))
    )
    for r in rows:
        snap.runs[r.model] = _Run(r.model, r.status, int(r.rows), r.window_start, r.window_end,
                                  r.finished_at, r.summary if isinstance(r.summary, dict) else {})

    # Only mqm's own table is ours to read; a user's source is not queried at scrape time.
    own = [m for m in snap.runs if config.models[m].source.kind == "builtin"]
    if own:
        li = inference_logs.c
        versions = _one_per_model([
            sa.select(li.model, li.model_version)
            .where(li.model == m, li.ts >= snap.runs[m].window_start,
                   li.ts < snap.runs[m].window_end)
            .order_by(li.ts.desc()).limit(1)
            for m in own
        ])
        for r in conn.execute(versions):
            if r.model_version:
                snap.versions[r.model] = str(r.model_version)

    counts = conn.execute(
        sa.select(c.model, c.status, sa.func.count().label("n"))
        .where(c.kind == "check", c.model.in_(models)).group_by(c.model, c.status)
    )
    for r in counts:
        snap.counts.setdefault(r.model, {})[r.status] = int(r.n)

    for r in conn.execute(sa.select(fallback_state).where(fallback_state.c.model.in_(models))):
        snap.flags[r.model] = r
    return snap


# --- building the families --------------------------------------------------------------

_Sample = tuple[str, tuple[str, ...], float]


def _number(value: Any) -> float | None:
    """A stored figure as a float; None (absent) for null, non-numbers and NaN/inf."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _section(checks: dict[str, Any], name: str) -> dict[str, Any]:
    """A section that ran; {} for a missing or failed one, whose figures are absent."""
    sec = checks.get(name)
    if not isinstance(sec, dict) or sec.get("status") == "error":
        return {}
    return sec


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
        samples.append(("mqm_scrape_error", (), float(error)))
        samples.append(("mqm_scrape_duration_seconds", (), time.perf_counter() - started))
        grouped: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        for name, labels, value in samples:
            grouped.setdefault(name, []).append((labels, value))
        yield from _families(grouped)

    def _snapshot(self) -> _Snapshot:
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the four queries, so counts and the latest run agree.
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            with conn.begin():
                return _read(conn, self._config)

    def _feature_labels(self, model: str) -> tuple[str, ...]:
        """The prediction column and the contract's features, in that order (cached)."""
        from monitor.schema import load_schema

        path = self._config.model(model).schema_path
        key = (str(path), path.stat().st_mtime_ns)
        cached = self._contracts.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        schema = load_schema(path)
        names = tuple(dict.fromkeys([schema.prediction.column, *schema.feature_names]))
        self._contracts[model] = (key, names)
        return names

    def _model(self, model: str, snap: _Snapshot, now: datetime) -> tuple[list[_Sample], bool]:
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

        run = snap.runs.get(model)
        if run is not None:
            version = snap.versions.get(model) or cfg.version or ""
            seen |= _run_samples(out, run, (model, version), kept)

        counts = snap.counts.get(model, {})
        for status in RUN_STATUSES:
            out.put("mqm_runs_total", (model, status), counts.get(status, 0))
        _flag_samples(out, model, snap.flags.get(model), cfg, now)
        out.put("mqm_feature_labels_dropped", (model,), len(seen - kept))
        return out.samples, ok


def _run_samples(out: _ModelSamples, run: _Run, base: tuple[str, str],
                 kept: frozenset[str]) -> set[str]:
    """The latest run's figures; returns every feature name the run carries."""
    seen: set[str] = set()

    def feature(name: str, column: str, value: Any) -> None:
        seen.add(column)
        if column in kept:
            out.put(name, (*base, column), value)

    out.state_set("mqm_run_status", base, RUN_STATUSES, run.status)
    out.put("mqm_run_window_end_timestamp_seconds", base, run.window_end.timestamp())
    out.put("mqm_run_timestamp_seconds", base, run.finished_at.timestamp())
    out.put("mqm_rows_checked", base, run.rows)
    checks = run.summary.get("checks") or {}
    for check in CHECKS:
        sec = checks.get(check)
        if isinstance(sec, dict) and isinstance(sec.get("status"), str):
            out.state_set("mqm_check_status", (*base, check), CHECK_STATUSES, sec["status"])

    schema = _section(checks, "schema")
    out.put("mqm_schema_violation_ratio", base, schema.get("violation_rate"))
    if "missing_columns" in schema:
        out.put("mqm_schema_missing_columns", base, len(schema["missing_columns"]))
        out.put("mqm_schema_unexpected_columns", base, len(schema["unexpected_columns"]))
    for col in schema.get("columns", ()):
        if col.get("state") == "present":
            feature("mqm_schema_feature_violation_ratio", col["column"], col["violation_rate"])

    drift = _section(checks, "drift")
    out.put("mqm_drifted_features_ratio", base, drift.get("share_drifted"))
    out.put("mqm_dataset_drift", base, drift.get("dataset_drift"))
    for feat in drift.get("features", ()):
        name = feat["feature"]
        if not feat.get("error"):  # an untested column has no score and did not drift
            feature("mqm_drift_score", name, feat.get("score"))
            feature("mqm_drift_threshold", name, feat.get("threshold"))
            feature("mqm_drift_detected", name, feat.get("drifted"))
        feature("mqm_null_rate_change_ratio", name, feat.get("null_rate_change"))
        feature("mqm_unseen_category_ratio", name, feat.get("unseen_share"))

    perf = _section(checks, "performance")
    metrics, drops = perf.get("metrics") or {}, perf.get("drops") or {}
    out.put("mqm_label_coverage_ratio", base, perf.get("label_coverage"))
    out.put("mqm_labels_mature", base, perf.get("mature"))
    out.put("mqm_accuracy_ratio", base, metrics.get("accuracy"))
    out.put("mqm_accuracy_drop_ratio", base, drops.get("accuracy"))
    for name in PERFORMANCE_METRICS:
        out.put("mqm_performance_metric", (*base, name), metrics.get(name))
        out.put("mqm_performance_metric_drop", (*base, name), drops.get(name))
    est = perf.get("estimated") or {}
    out.put("mqm_estimated_accuracy_ratio", base, est.get("estimated_accuracy"))
    out.put("mqm_estimated_accuracy_drop_ratio", base, est.get("drop"))

    service = _section(checks, "service")
    for pct in PERCENTILES:
        ms = _number(service.get(f"latency_p{pct}_ms"))
        out.put("mqm_latency_seconds", (*base, pct), None if ms is None else ms / 1000)
    out.put("mqm_error_ratio", base, service.get("error_rate"))
    out.put("mqm_throughput_requests_per_second", base, service.get("throughput_per_s"))
    out.put("mqm_fallback_answer_ratio", base, service.get("fallback_rate"))
    return seen


def _flag_samples(out: _ModelSamples, model: str, row: Any, cfg: ModelConfig,
                  now: datetime) -> None:
    """The served flag as ``flag_document`` computes it, without its writes."""
    labels = (model,)
    if row is None:
        # flag_document would create the row now: off, automatic, not stale.
        for name in ("mqm_fallback_active", "mqm_fallback_manual", "mqm_fallback_stale"):
            out.put(name, labels, 0)
        return
    state = state_of(row)
    flag, stale = served(state, cfg, now)
    out.put("mqm_fallback_active", labels, flag.active)
    out.put("mqm_fallback_manual", labels, flag.source == "manual")
    out.put("mqm_fallback_stale", labels, stale)
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
