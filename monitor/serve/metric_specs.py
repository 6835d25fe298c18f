"""Every metric ``mqm serve`` exports, declared once: the collector
(``monitor.serve.metrics``) builds its families from ``METRICS`` and ``mqm metrics
reference`` prints the README's table from it.

Names follow Prometheus' rules: the ``mqm_`` prefix, base units (seconds, ratios 0..1,
Unix times), ``_total`` on the one counter. Labels: ``model``; ``version`` on the
figures of the latest run; ``feature`` (bounded) on per-feature figures; the others
take values from the fixed sets below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monitor.results import RUN_STATUSES, SECTIONS

__all__ = [
    "CHECKS",
    "CHECK_STATUSES",
    "MAX_VERSION_LABELS",
    "METRICS",
    "PERCENTILES",
    "PERFORMANCE_METRICS",
    "RETENTION_TABLES",
    "RUN_STATUSES",
    "SEGMENT_STATUSES",
    "MetricSpec",
    "metric_reference",
]

# The fixed value sets of the non-free labels (bounded cardinality).
CHECKS = SECTIONS
CHECK_STATUSES = ("ok", "warn", "critical", "skipped", "not_applicable", "insufficient_data",
                  "error")
PERCENTILES = ("50", "95", "99")
# monitor.checks.performance's CLASSIFICATION_METRICS + REGRESSION_METRICS, repeated here
# so that a scrape does not import pandas; a test keeps them equal.
PERFORMANCE_METRICS = ("accuracy", "f1", "roc_auc", "mae", "rmse")
# monitor.checks.estimated_metrics.ESTIMATED_METRICS (classifiers) + estimated_loss's
# ESTIMATED_LOSSES (regressors), likewise.
ESTIMATED_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc", "mae", "rmse")
# A segment's statuses (monitor.results.SegmentResult).
SEGMENT_STATUSES = ("ok", "warn", "critical", "insufficient_data")
# Model versions of the latest run exported per version: the most rows first, at most this
# many (a window serving more versions than this exports only its main ones).
MAX_VERSION_LABELS = 10
# The tables retention deletes from (monitor.store.retention).
RETENTION_TABLES = ("inference_logs", "ground_truth", "log_blocks")


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
_SEGMENT = ("model", "version", "segment")
_VERSION = ("model", "version", "model_version")

METRICS: tuple[MetricSpec, ...] = (
    # The latest check run.
    MetricSpec("mqm_run_status", "gauge", (*_RUN, "status"), "1 or 0",
               "Status of the latest check run: 1 for its status, 0 for the others "
               "(ok, warn, critical, insufficient_data, error)."),
    MetricSpec("mqm_check_status", "gauge", (*_RUN, "check", "status"), "1 or 0",
               "Status of each section (schema, drift, performance, service, versions, and "
               "segments and multivariate when configured) of the latest "
               "run: 1 for its status, 0 for the others (ok, warn, critical, skipped, "
               "not_applicable, insufficient_data, error); performance is not_applicable "
               "for a features-only model."),
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
    MetricSpec("mqm_schema_type_mismatch_ratio", "gauge", _FEATURE, "ratio",
               "Share of the column's values whose type the contract does not allow."),
    MetricSpec("mqm_schema_null_ratio", "gauge", _FEATURE, "ratio",
               "Share of rows where the column is null (a violation where the contract "
               "says not nullable)."),
    MetricSpec("mqm_schema_out_of_range_ratio", "gauge", _FEATURE, "ratio",
               "Share of the column's values outside the contract's min/max."),
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
    MetricSpec("mqm_estimated_accuracy_sampling_error_ratio", "gauge", _RUN, "ratio",
               "Sampling error of the estimated accuracy in the window: the spread of per-row "
               "correctness on the reference over the square root of the window's rows "
               "(NannyML's)."),
    MetricSpec("mqm_estimated_accuracy_lower_ratio", "gauge", _RUN, "ratio",
               "Lower bound of the estimated accuracy's band (estimate - 3 sampling errors, "
               "at least 0)."),
    MetricSpec("mqm_estimated_accuracy_upper_ratio", "gauge", _RUN, "ratio",
               "Upper bound of the band (estimate + 3 sampling errors, at most 1); an "
               "estimated drop warns only when the reference accuracy lies above it "
               "(performance.estimated_band)."),
    MetricSpec("mqm_estimated_performance_metric", "gauge", (*_RUN, "metric"),
               "ratio; mae, rmse: the target's unit",
               "Every metric estimated without labels: classifiers' accuracy, f1, precision, "
               "recall, roc_auc (CBPE; binary: of the positive class, multiclass: macro); "
               "regressors' mae and rmse (direct loss estimation)."),
    MetricSpec("mqm_estimated_performance_metric_sampling_error", "gauge", (*_RUN, "metric"),
               "as the metric", "Sampling error of each estimated metric in the window "
               "(mae: the spread of the absolute error on the reference over the square root "
               "of the window's rows, NannyML's)."),
    MetricSpec("mqm_estimated_performance_metric_lower", "gauge", (*_RUN, "metric"),
               "as the metric", "Lower bound of each estimated metric's band (estimate - 3 "
               "sampling errors, at least 0)."),
    MetricSpec("mqm_estimated_performance_metric_upper", "gauge", (*_RUN, "metric"),
               "as the metric", "Upper bound of each estimated metric's band (estimate + 3 "
               "sampling errors; at most 1 for ratios)."),
    MetricSpec("mqm_estimated_performance_metric_drop", "gauge", (*_RUN, "metric"), "ratio",
               "Worsening of the judged estimate against the reference, positive when worse: "
               "accuracy's drop (absolute), mae's rise (relative, judged against "
               "performance.allowed_estimated_rise)."),
    MetricSpec("mqm_estimated_calibrated_classes", "gauge", _RUN, "classes",
               "Classes whose scores the reference calibrates (binary: 0 or 1)."),
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
    # segments
    MetricSpec("mqm_segment_status", "gauge", (*_SEGMENT, "status"), "1 or 0",
               "Status of each segment (column=value, __other__ for the values beyond "
               "segments.max_values) in the latest run: 1 for its status, 0 for the others "
               "(ok, warn, critical, insufficient_data)."),
    MetricSpec("mqm_segment_rows_checked", "gauge", _SEGMENT, "rows",
               "Rows of the segment in the latest run's window."),
    MetricSpec("mqm_segment_drifted_features_ratio", "gauge", _SEGMENT, "ratio",
               "Share of the segment's tested columns that drifted against the reference "
               "rows of the same segment (or the whole reference, see the run)."),
    MetricSpec("mqm_segment_schema_violation_ratio", "gauge", _SEGMENT, "ratio",
               "Share of the segment's rows with at least one contract violation."),
    MetricSpec("mqm_segment_accuracy_ratio", "gauge", _SEGMENT, "ratio",
               "Accuracy on the segment's labelled rows (classifiers)."),
    MetricSpec("mqm_segment_estimated_accuracy_ratio", "gauge", _SEGMENT, "ratio",
               "Accuracy of the segment estimated without labels."),
    MetricSpec("mqm_segment_labels_dropped", "gauge", _MODEL, "segments",
               "Segments of the latest run left out of the per-segment series (beyond "
               "serve.max_segment_labels)."),
    # multivariate (when multivariate.enabled)
    MetricSpec("mqm_multivariate_auc", "gauge", _RUN, "ratio",
               "Cross-validated ROC AUC of the domain classifier telling the window's rows "
               "from the reference's (0.5: indistinguishable)."),
    MetricSpec("mqm_multivariate_auc_lower", "gauge", _RUN, "ratio",
               "Lower bound of the AUC's 95% confidence interval (DeLong)."),
    MetricSpec("mqm_multivariate_auc_upper", "gauge", _RUN, "ratio",
               "Upper bound of the AUC's 95% confidence interval (DeLong)."),
    MetricSpec("mqm_multivariate_auc_threshold", "gauge", _RUN, "ratio",
               "AUC above which the window has multivariate drift "
               "(multivariate.auc_threshold)."),
    MetricSpec("mqm_multivariate_reconstruction_error", "gauge", _RUN, "standard deviations",
               "Mean PCA reconstruction error of the window's numerical features, "
               "standardized on the reference; absent with fewer than two."),
    MetricSpec("mqm_multivariate_reconstruction_lower", "gauge", _RUN, "standard deviations",
               "Lower bound of the reference's band (its mean error - 3 sigma)."),
    MetricSpec("mqm_multivariate_reconstruction_upper", "gauge", _RUN, "standard deviations",
               "Upper bound of the reference's band (its mean error + 3 sigma)."),
    MetricSpec("mqm_multivariate_feature_importance", "gauge", _FEATURE, "ratio",
               "Drop of the domain classifier's held-out AUC when the feature is shuffled "
               "(permutation importance), for the top features "
               "(multivariate.top_features) only."),
    # versions: each model version of the latest run's window (model_version), as the
    # versions section measured it.
    MetricSpec("mqm_model_version_rows", "gauge", _VERSION, "rows",
               "Rows each model version answered in the latest run's window (the "
               f"{MAX_VERSION_LABELS} versions with the most rows)."),
    MetricSpec("mqm_model_version_accuracy_ratio", "gauge", _VERSION, "ratio",
               "Accuracy of each version's labelled rows; absent until the window is mature."),
    MetricSpec("mqm_model_version_estimated_accuracy_ratio", "gauge", _VERSION, "ratio",
               "Accuracy of each version estimated from its logged probabilities (CBPE)."),
    MetricSpec("mqm_model_version_error_ratio", "gauge", _VERSION, "ratio",
               "Share of each version's requests that failed."),
    MetricSpec("mqm_model_version_latency_p95_seconds", "gauge", _VERSION, "seconds",
               "Latency p95 of each version's requests."),
    MetricSpec("mqm_model_version_prediction_drift_detected", "gauge", _VERSION, "1 or 0",
               "1 when the predictions of the version drifted from the reference's."),
    # Store-level state, per model.
    MetricSpec("mqm_runs_total", "counter", (*_MODEL, "status"), "runs",
               "Check runs stored, by status (counted in the store; pruning runs lowers "
               "it, which Prometheus takes as a counter reset)."),
    MetricSpec("mqm_fallback_active", "gauge", _MODEL, "1 or 0",
               "1 when the served fallback flag is on."),
    MetricSpec("mqm_fallback_manual", "gauge", _MODEL, "1 or 0",
               "1 when the served flag comes from a manual override."),
    MetricSpec("mqm_fallback_override_expiry_timestamp_seconds", "gauge", _MODEL,
               "Unix seconds",
               "When the manual override now served expires; absent without an override or "
               "for one that lasts until cleared."),
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
    MetricSpec("mqm_retention_deleted_rows_total", "counter", (*_MODEL, "table"), "rows",
               "Rows retention deleted from inference_logs, ground_truth and log_blocks "
               "(table), counted in the store since the model's first pass."),
    MetricSpec("mqm_retention_last_run_timestamp_seconds", "gauge", _MODEL, "Unix seconds",
               "When retention last ran for the model (mqm serve or mqm retention); absent "
               "before the first pass."),
    MetricSpec("mqm_retention_horizon_timestamp_seconds", "gauge", _MODEL, "Unix seconds",
               "Every log, label and log block of the model older than this is deleted (the "
               "horizon of its last complete pass); absent before one."),
    # This process.
    MetricSpec("mqm_alert_post_failures_total", "counter", (), "posts",
               "Posts of alerts to Alertmanager (alerting.alertmanager_url) that failed in "
               "this process since it started."),
    # The scrape itself.
    MetricSpec("mqm_scrape_error", "gauge", (), "1 or 0",
               "1 when reading the store failed (then only this, the duration and this "
               "process's counters are exported) or a model's figures could not be built; see "
               "the service log."),
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
