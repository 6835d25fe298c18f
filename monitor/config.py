"""Typed config: one YAML file (``monitor.yaml``) plus environment overrides.

Every setting is declared once here, with its type, default and help; the
config reference in the README is generated from these declarations
(``mqm config reference``) and a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.errors import ConfigError, UnknownModelError
from monitor.times import parse_duration
from monitor.yamlfile import load_yaml_model

__all__ = [
    "AlertingConfig",
    "ColumnMapping",
    "Config",
    "DriftConfig",
    "FallbackConfig",
    "ModelConfig",
    "MultivariateConfig",
    "PerformanceConfig",
    "ScheduleConfig",
    "SchemaCheckConfig",
    "SegmentsConfig",
    "ServeConfig",
    "ServiceConfig",
    "SourceConfig",
    "config_path",
    "load_config",
    "parse_duration",
]

DEFAULT_CONFIG = "monitor.yaml"
ENV_CONFIG = "MQM_CONFIG"
ENV_DATABASE_URL = "MQM_DATABASE_URL"
ENV_ALERTMANAGER_URL = "MQM_ALERTMANAGER_URL"
ENV_INGEST_TOKEN = "MQM_INGEST_TOKEN"



MAX_DURATION = timedelta(days=3650)
# The store's width for a model name (check_runs.model and every other table's).
MAX_MODEL_NAME = 200


def _duration(value: Any) -> Any:
    """``parse_duration``, with a number too large for a duration refused, not raised."""
    try:
        return parse_duration(value)
    except OverflowError:
        raise ValueError(f"is too long a duration (at most {MAX_DURATION.days} days)") from None


def _bounded(value: timedelta) -> timedelta:
    # Windows are aligned to the epoch and added to times: a longer one overflows them.
    if abs(value) > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION.days} days (ten years)")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


# Durations written as '30m', '6h', '1d', '2w' or seconds.
Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_bounded)]
PositiveDuration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_bounded),
                             AfterValidator(_positive)]
NonNegativeDuration = Annotated[timedelta, BeforeValidator(_duration),
                                AfterValidator(_bounded), AfterValidator(_not_negative)]


def _days(value: timedelta) -> str:
    days = value / timedelta(days=1)
    return f"{days:g} days" if days >= 1 else f"{value.total_seconds():g} s"


def _model_name(name: str) -> str:
    # A name is a key in every table of the store, a metric label, a URL path segment.
    if not 1 <= len(name) <= MAX_MODEL_NAME:
        raise ValueError(f"model name {name!r} must be 1 to {MAX_MODEL_NAME} characters, "
                         f"not {len(name)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValueError(f"model name {name!r} must not hold control characters")
    return name


ModelName = Annotated[str, AfterValidator(_model_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ColumnMapping(_Section):
    """Where a user's own log table keeps each field mqm needs."""

    request_id: str = Field("request_id", description="Column with the request id.")
    timestamp: str = Field("timestamp", description="Column with the inference time (UTC).")
    model_version: str | None = Field(None, description="Column with the model version.")
    prediction: str | None = Field(
        None, description="Column with the prediction (default: the schema's prediction column)."
    )
    latency_ms: str | None = Field(None, description="Column with the latency in milliseconds.")
    error: str | None = Field(None, description="Column with a true/false error flag.")
    error_message: str | None = Field(None, description="Column with the error message.")
    features_json: str | None = Field(
        None, description="Column holding all features as one JSON object, instead of one "
        "column per feature."
    )
    features: dict[str, str] = Field(
        default_factory=dict,
        description="Feature name -> column, where the column is not named as the feature.",
    )
    probabilities: dict[str, str] | None = Field(
        None, description="Class label -> column with its probability (default: the schema's "
        "probability_columns).",
    )

    @field_validator("probabilities", mode="before")
    @classmethod
    def _class_keys_as_text(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class SourceConfig(_Section):
    """Where a model's inference logs are read from."""

    kind: Literal["builtin", "sql"] = Field(
        "builtin", description="builtin: mqm's own inference_logs table; sql: a user's table "
        "or query."
    )
    url: str | None = Field(
        None, description="Database URL of a sql source (default: the monitor's database)."
    )
    table: str | None = Field(None, description="Table of a sql source.")
    query: str | None = Field(
        None, description="SELECT of a sql source (instead of table); it is wrapped as a "
        "subquery and filtered by time."
    )
    columns: ColumnMapping = Field(default_factory=ColumnMapping)

    @model_validator(mode="after")
    def _one_of_table_query(self) -> SourceConfig:
        if self.kind == "sql" and (self.table is None) == (self.query is None):
            raise ValueError("a sql source needs exactly one of table or query")
        if self.kind == "builtin" and (self.table or self.query or self.url):
            raise ValueError("table, query and url belong to a sql source (kind: sql)")
        return self


class SchemaCheckConfig(_Section):
    """Limits of the schema check."""

    warn_violation_rate: float = Field(
        0.01, ge=0, le=1, description="Share of rows with any violation that makes a warning."
    )
    critical_violation_rate: float = Field(
        0.05, ge=0, le=1, description="Share of rows with any violation that makes it critical."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SchemaCheckConfig:
        if self.warn_violation_rate > self.critical_violation_rate:
            raise ValueError("warn_violation_rate must not exceed critical_violation_rate")
        return self


DRIFT_METHODS = (
    "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "TVD",
    "t_test", "mannw", "anderson", "cramer_von_mises", "ed", "es", "fisher_exact", "g_test",
    "empirical_mmd",
)
DriftMethod = Literal[
    "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "TVD",
    "t_test", "mannw", "anderson", "cramer_von_mises", "ed", "es", "fisher_exact", "g_test",
    "empirical_mmd",
]


class DriftConfig(_Section):
    """Drift against the reference set, with Evidently 0.7 DataDriftPreset's semantics.

    Unset methods and thresholds mean Evidently's defaults, chosen per column by its
    type, the reference size and the number of unique values.
    """

    method: DriftMethod | None = Field(None, description="Method for every column.")
    num_method: DriftMethod | None = Field(None, description="Method for numerical columns.")
    cat_method: DriftMethod | None = Field(None, description="Method for categorical columns.")
    per_column_method: dict[str, DriftMethod] = Field(
        default_factory=dict, description="Column -> method, beating the above."
    )
    threshold: float | None = Field(None, description="Threshold for every column.")
    num_threshold: float | None = Field(None, description="Threshold for numerical columns.")
    cat_threshold: float | None = Field(None, description="Threshold for categorical columns.")
    per_column_threshold: dict[str, float] = Field(
        default_factory=dict, description="Column -> threshold, beating the above."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted columns at which the dataset drifts."
    )
    severity: Literal["warn", "critical"] = Field(
        "critical", description="Status of a window whose dataset drifts."
    )
    prediction_in_share: bool = Field(
        True, description="Count the prediction column in the drifted share and the dataset "
        "verdict, as Evidently's DataDriftPreset does. false: the prediction is still tested "
        "and reported, but the share is the features' alone, so a constant or rarely "
        "changing prediction cannot dilute it."
    )
    warn_chance_rate: float | None = Field(
        0.05, ge=0, lt=1, description="Share of columns expected to drift by chance in a "
        "clean window (each column is tested at its own threshold; 0.05 for the p-value "
        "tests). Short of dataset drift, the window warns only when this many drifted "
        "columns is less likely than warn_significance under chance alone (binomial); "
        "the columns' own verdicts are Evidently's either way. null: warn on any drifted "
        "column."
    )
    warn_significance: float = Field(
        0.01, gt=0, lt=1, description="How unlikely under chance the number of drifted "
        "columns must be for the window to warn (see warn_chance_rate)."
    )
    max_null_rate_change: float | None = Field(
        0.1, gt=0, le=1, description="A column whose null rate rose by more than this "
        "(0..1, against the reference) makes the drift section warn, with a reason, "
        "nullable or not. null: null rates are reported, not judged."
    )
    per_column_max_null_rate_change: dict[str, float] = Field(
        default_factory=dict, description="Column -> max_null_rate_change, beating the above."
    )
    max_exact_rows: int = Field(
        1_000_000, ge=1000, description="Windows up to this many rows are tested exactly; "
        "larger ones on a uniform sample of this size (the run records it)."
    )


class MultivariateConfig(_Section):
    """Multivariate drift: a domain classifier (reference rows against the window's rows)
    and, for the numerical features, PCA reconstruction error (NannyML's method). Catches
    a change in how features move together that no column's own test can see."""

    enabled: bool = Field(
        False, description="Run the check. Off by default: it imports scikit-learn and "
        "fits five gradient-boosting models per window (about 2 s with 25 features at the "
        "default sample on 2 cores, see bench/multivariate.py), and the reference profile "
        "keeps a row sample."
    )
    sample_rows: int = Field(
        5000, ge=100, description="Rows per side: a uniform sample of the reference (kept "
        "in its profile) and of the window (seeded by the window, so a rerun agrees)."
    )
    min_rows: int = Field(
        200, ge=20, description="Fewer rows than this on either side: the section is "
        "insufficient_data, never a verdict."
    )
    folds: int = Field(
        5, ge=2, le=20, description="Cross-validation folds of the domain classifier."
    )
    auc_threshold: float = Field(
        0.6, gt=0.5, lt=1, description="Cross-validated ROC AUC of the domain classifier "
        "above which the window has drifted (0.5: the classifier cannot tell the window "
        "from the reference)."
    )
    reconstruction: Literal["off", "report", "judge"] = Field(
        "report", description="PCA reconstruction error of the numerical features "
        "(standardized on the reference, components keeping 65% of the variance), NannyML's "
        "method. report: computed and shown with its band (the reference's mean +- 3 "
        "sigma); judge: a window outside the band also has multivariate drift; off: not "
        "computed. report by default: on the sample data a clean window left the band "
        "(3.1 sigma) while the classifier's AUC stayed 0.506, and the classifier caught "
        "every shifted window the band did."
    )
    top_features: int = Field(
        5, ge=1, le=50, description="Features reported by permutation importance (the "
        "drop of the classifier's held-out AUC when a feature is shuffled), measured once "
        "the AUC's 95% interval lies above 0.5 (none named while the classifier is no "
        "better than chance)."
    )
    severity: Literal["warn", "critical"] = Field(
        "warn", description="Status of a window with multivariate drift."
    )


class PerformanceConfig(_Section):
    """Accuracy decay: realized metrics on labelled rows against the reference set."""

    allowed_drop: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 0.05, "f1": 0.05, "roc_auc": 0.05,
                                 "mae": 0.1, "rmse": 0.1},
        description="Metric -> largest tolerated worsening against the reference (absolute "
        "for accuracy, f1 and roc_auc; relative for mae and rmse).",
    )
    min_label_coverage: float = Field(
        0.8, ge=0, le=1, description="Share of rows with labels at which a window is mature."
    )
    max_label_delay: Duration = Field(
        timedelta(days=7), description="A window this old is mature whatever its coverage."
    )
    min_labelled_rows: int = Field(
        100, ge=1, description="Fewer labelled rows than this: accuracy is not judged."
    )
    allowed_estimated_drop: float = Field(
        0.05, ge=0, le=1, description="Largest tolerated drop of the estimated accuracy "
        "(no labels needed) against the reference; a larger one is a warning (see "
        "estimated_band)."
    )
    allowed_estimated_rise: float = Field(
        0.1, ge=0, description="Regressors: largest tolerated rise of the estimated MAE (no "
        "labels needed; NannyML's direct loss estimation) against the reference MAE, "
        "relative as for mae in allowed_drop; a larger one is a warning (see estimated_band)."
    )
    estimated_band: bool = Field(
        True, description="A drop past allowed_estimated_drop warns only when the reference "
        "accuracy also lies above the estimate's confidence band (3 sampling errors, as "
        "NannyML's CBPE), so that a small window does not warn on noise; likewise a rise past "
        "allowed_estimated_rise only when the reference MAE lies below the estimated MAE's "
        "band; false: the drop (rise) alone decides."
    )
    estimated_calibration: Literal["nannyml", "always"] = Field(
        "nannyml", description="Which classes' scores the reference calibrates (isotonic) "
        "before they are read as probabilities. nannyml: only those whose expected "
        "calibration error it lowers on held-out splits, as NannyML's CBPE, so the estimate "
        "equals NannyML's; always: every class. On bench/estimate_vs_nannyml.py's 200 "
        "held-out windows always landed nearer the realized accuracy (mean error 0.017 "
        "against 0.026; multiclass 0.022 against 0.043)."
    )


class ServiceConfig(_Section):
    """Service health from the logs."""

    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Share of error rows above which a window is critical."
    )
    max_latency_p99_ms: float | None = Field(
        None, gt=0, description="p99 latency above which a window is a warning."
    )


# The pseudo-column a segment may name besides the contract's categorical features.
MODEL_VERSION = "model_version"
# Segment values folded together beyond segments.max_values, and the value of a null.
OTHER_SEGMENT = "__other__"
NULL_SEGMENT = "__null__"
_SEGMENT_TYPES = ("category", "bool", "string")


class SegmentsConfig(_Section):
    """Checks per segment: the rows of a window that share a value of a column."""

    columns: tuple[str, ...] = Field(
        (), description="Columns whose values split each window into segments: categorical "
        "features of the contract (category, bool, string) or model_version. Each segment "
        "gets its own schema check, drift (against the reference rows of the same segment), "
        "accuracy and estimated accuracy. Empty: no segments."
    )
    max_values: int = Field(
        10, ge=1, le=100, description="Per column, at most this many segments: the most "
        f"frequent values of the window; the other values form one segment, {OTHER_SEGMENT}."
    )
    min_rows: int = Field(
        200, ge=1, description="A segment with fewer rows in the window is insufficient_data "
        "and not checked."
    )
    max_rows: int | None = Field(
        20_000, ge=1000, description="A segment with more rows is checked for drift, "
        "accuracy and its estimate on a uniform sample of this many (seeded by the window: "
        "a rerun draws the same); its schema counts and row count stay exact. Each segment "
        "column covers the whole window again, so this keeps segments within about the cost "
        "of the check itself (bench/segments.py). null: every row."
    )
    min_reference_rows: int = Field(
        200, ge=1, description="A segment with fewer reference rows (model_version always: "
        "the reference set has no versions) is compared with the whole reference set, and "
        "its result says so."
    )
    severity: Literal["none", "warn", "critical"] = Field(
        "warn", description="The worst status a segment can give the run: warn (default), "
        "critical (a segment alone can trip the fallback flag), none (segments inform only: "
        "their results are stored and shown, the run's status ignores them)."
    )

    @field_validator("columns")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({c for c in value if value.count(c) > 1})
        if repeated:
            raise ValueError(f"names column(s) more than once: {', '.join(repeated)}")
        return value

    def check_columns(self, feature_types: dict[str, str], contract: str) -> None:
        """``ConfigError`` naming ``segments.columns`` and the column when one is not a
        categorical feature of the contract (``feature_types``: feature -> type) nor
        model_version."""
        for column in self.columns:
            if column == MODEL_VERSION:
                continue
            kind = feature_types.get(column)
            if kind is None:
                raise ConfigError(
                    f"segments.columns: {column!r} is not a feature of the contract "
                    f"{contract} (nor {MODEL_VERSION}); known: {', '.join(feature_types)}")
            if kind not in _SEGMENT_TYPES:
                raise ConfigError(
                    f"segments.columns: {column!r} is a feature of type {kind}; a segment "
                    f"column must be categorical ({', '.join(_SEGMENT_TYPES)}) or {MODEL_VERSION}")


class FallbackConfig(_Section):
    """When the fallback flag trips and recovers, and what serving answers meanwhile."""

    bad_statuses: tuple[Literal["warn", "critical"], ...] = Field(
        ("critical",), min_length=1, description="Run statuses that count as bad."
    )
    trip_after: int = Field(
        2, ge=1, description="The flag turns on at this many consecutive bad runs."
    )
    recover_after: int = Field(
        3, ge=1, description="The flag turns off again at this many consecutive ok runs "
        "(a warn run that is not bad restarts the count)."
    )
    stale_after: PositiveDuration | None = Field(
        None, description="With no successful run (ok, warn or critical) for this long the "
        "flag is reported stale, still unchanged (default: three windows)."
    )
    default_prediction: Any = Field(
        None, description="The safe answer served to clients in the flag document, for "
        "serving to answer with while the flag is on."
    )

    @field_validator("bad_statuses")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("default_prediction")
    @classmethod
    def _json(cls, value: Any) -> Any:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(f"must be a JSON value, got {value!r}") from None
        return value


class ScheduleConfig(_Section):
    """When ``mqm serve`` checks the model: every window by default, or on a cron line."""

    every: PositiveDuration | None = Field(
        None, description="Check this often ('15m', '1h'); default: once per window."
    )
    cron: str | None = Field(
        None, description="A five-field cron line (UTC) instead of 'every', e.g. '5 * * * *'."
    )
    delay: NonNegativeDuration = Field(
        timedelta(minutes=5), description="A window is checked this long after it ends, so "
        "that late logs are in."
    )
    recheck_every: PositiveDuration = Field(
        timedelta(hours=1), description="How often windows still waiting for labels are "
        "checked again."
    )
    compact_every: PositiveDuration | None = Field(
        timedelta(minutes=1), description="mqm's own log table only: how often new logs "
        "and labels are copied into columnar log blocks, which windows read many times "
        "faster than the rows; also done before each check. null: never (reads use the rows)."
    )
    retention_every: PositiveDuration = Field(
        timedelta(hours=1), description="How often logs, labels and log blocks older than "
        "the model's retention are deleted (a run with nothing to delete costs a few index "
        "lookups)."
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"must have five fields (minute hour day month weekday), "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either 'every' or 'cron', not both")
        return self


class ModelConfig(_Section):
    """One monitored model."""

    schema_path: Path = Field(
        alias="schema", description="Path of the model's contract (schemas/<model>.yaml)."
    )
    reference: Path = Field(
        description="Reference set: a CSV or Parquet file holding the contract's features, "
        "the model's prediction column (and probability columns) and the target (labels)."
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    version: str | None = Field(
        None, description="Model version to record when the logs carry none."
    )
    window: PositiveDuration = Field(
        timedelta(days=1), description="Length of one check window ('6h', '1d', seconds)."
    )
    min_rows: int = Field(
        100, ge=1, description="Fewer rows than this make a window insufficient_data."
    )
    schema_check: SchemaCheckConfig = Field(default_factory=SchemaCheckConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    multivariate: MultivariateConfig = Field(default_factory=MultivariateConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    retention: PositiveDuration | None = Field(
        timedelta(days=90), description="Logs, labels and log blocks of windows that ended "
        "longer ago than this are deleted (by `mqm serve` every schedule.retention_every, or "
        "`mqm retention`); whole windows only, never one the scheduler has not checked. At "
        "least performance.max_label_delay + window, so that no window still awaiting labels "
        "is cut; unset, 90 days or that, whichever is longer. Runs, their figures and the "
        "flag's events are kept. null: keep everything."
    )

    @property
    def compacted(self) -> bool:
        """Whether the model's logs are copied into log blocks: they are in mqm's own
        table and ``schedule.compact_every`` is set."""
        return self.source.kind == "builtin" and self.schedule.compact_every is not None

    @property
    def stale_after(self) -> timedelta:
        """``fallback.stale_after``, or three windows when unset."""
        return self.fallback.stale_after or 3 * self.window

    @property
    def retention_period(self) -> timedelta | None:
        """``retention`` as set; unset, the default raised to max_label_delay + window."""
        if "retention" in self.model_fields_set or self.retention is None:
            return self.retention
        return max(self.retention, self.performance.max_label_delay + self.window)

    @model_validator(mode="after")
    def _retention_outlives_labels(self) -> ModelConfig:
        if self.retention is None or "retention" not in self.model_fields_set:
            return self
        shortest = self.performance.max_label_delay + self.window
        if self.retention < shortest:
            raise ValueError(
                f"retention ({_days(self.retention)}) must be at least "
                f"performance.max_label_delay + window ({_days(shortest)}): a window still "
                "awaiting labels would lose its logs")
        return self

    @field_validator("schema_path", "reference")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return value if value.is_absolute() or base is None else Path(base) / value


class ServeConfig(_Section):
    """The long-running service, ``mqm serve``."""

    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the HTTP API.")
    ready_max_age: Duration | None = Field(
        None, description="/readyz fails when a model this replica answers for (its "
        "scheduler holds the model's lease, or no live replica does) last ran successfully "
        "longer ago than this (default: three windows of that model). A model another "
        "replica holds live does not count, so one stalled replica never makes the others "
        "unready."
    )
    max_feature_labels: int = Field(
        200, ge=1, description="Per model, at most this many features get their own "
        "per-feature metric series; the rest are left out, and counted."
    )
    max_segment_labels: int = Field(
        100, ge=1, description="Per model, at most this many segments (column=value) get "
        "their own per-segment metric series, in the latest run's order; the rest are left "
        "out, and counted."
    )
    lease: PositiveDuration = Field(
        timedelta(seconds=15), description="PostgreSQL: a replica runs a model's checks "
        "under a lease that lapses this long after it was last renewed; then another "
        "replica takes the model over (a stalled replica's writes are refused). Longer: "
        "fewer needless takeovers on a slow database; shorter: a faster takeover."
    )
    lease_renew: PositiveDuration = Field(
        timedelta(seconds=5), description="PostgreSQL: how often each replica renews its "
        "leases, takes over lapsed ones and rebalances the models among the live "
        "replicas. At most a third of 'lease', so that a renewal can fail twice in a row "
        "without losing the lease."
    )

    ingest_token: str | None = Field(
        None, description="A bearer token that may post logs and labels (POST "
        "/v1/models/{model}/logs and /labels) and nothing else: give it to serving "
        "replicas, so that they cannot change the fallback flag. MQM_API_TOKEN may post "
        f"them too. {ENV_INGEST_TOKEN} overrides it (better than the file for a secret). "
        "Default: only MQM_API_TOKEN may post."
    )
    ingest_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest log or label batch accepted over "
        "HTTP, in bytes, both as sent and once gunzipped; a larger one is refused with 413."
    )
    ingest_max_rows: int = Field(
        10_000, ge=1, description="Most rows (lines) in one log or label batch accepted over "
        "HTTP; a batch with more is refused with 413, and nothing of it is stored."
    )

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ServeConfig:
        if self.lease_renew * 3 > self.lease:
            raise ValueError(f"lease_renew ({self.lease_renew.total_seconds():g} s) must be "
                             f"at most a third of lease ({self.lease.total_seconds():g} s)")
        return self



class AlertingConfig(_Section):
    """mqm's own alerts, posted to Alertmanager, for teams that run it without Prometheus."""

    alertmanager_url: str | None = Field(
        None, description="Base URL of Alertmanager (e.g. http://alertmanager:9093): after "
        "every check run and override, mqm posts to its v2 API whether the model's fallback "
        "flag is on (MqmFallbackActive) and whether the run is critical (MqmModelCritical), "
        "with endsAt so that alerts resolve. Failures are logged and counted, never block a "
        f"check. Default: no posts. {ENV_ALERTMANAGER_URL} overrides it."
    )
    timeout: PositiveDuration = Field(
        timedelta(seconds=2), description="How long one post may take before it is given up."
    )
    hold_for: PositiveDuration | None = Field(
        None, description="A firing alert is posted with endsAt this far ahead, and posted "
        "again after every run while it holds (default: two windows of the model plus its "
        "schedule delay)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on every alert mqm posts (e.g. "
        "team, environment)."
    )
    dashboard_url: str | None = Field(
        None, description="Base URL of the dashboard, for the dashboard_url annotation "
        "(?model=<model> is added)."
    )


class Config(_Section):
    """The whole config file."""

    database_url: str = Field(
        "sqlite:///mqm.db",
        description="SQLAlchemy URL of the store; a relative SQLite path is relative to the "
        f"config file. {ENV_DATABASE_URL} overrides it.",
    )
    models: dict[ModelName, ModelConfig] = Field(description="Monitored models by name.")
    serve: ServeConfig = Field(default_factory=ServeConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    fallback_dir: Path | None = Field(
        None, description="Folder where each model's fallback flag is written as <model>.json, "
        "replaced atomically on every change, for sidecars and shared volumes (default: no "
        "files)."
    )

    @field_validator("database_url")
    @classmethod
    def _sqlite_relative(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        prefix = "sqlite:///"
        if base and value.startswith(prefix) and not value.startswith(prefix + "/"):
            rest = value[len(prefix):]
            if rest and rest != ":memory:":
                return prefix + str((Path(base) / rest).resolve())
        return value

    @field_validator("fallback_dir")
    @classmethod
    def _dir_relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        # Each model's flag file is named after the model.
        for name in info.data.get("models", {}):
            if not name or name.startswith(".") or "/" in name or "\\" in name:
                raise ValueError(f"model name {name!r} cannot name a file in fallback_dir")
        base = (info.context or {}).get("base_dir")
        return value if value.is_absolute() or base is None else Path(base) / value

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name, list(self.models)) from None


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file: ``--config``, else ``MQM_CONFIG``, else ``./monitor.yaml``."""
    return Path(explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config; environment overrides win over the file."""
    file = config_path(path)
    cfg = load_yaml_model(file, Config, ConfigError, base_dir=str(file.resolve().parent))
    url = os.environ.get(ENV_DATABASE_URL)
    if url:
        cfg = cfg.model_copy(update={"database_url": url})
    ingest_token = os.environ.get(ENV_INGEST_TOKEN)
    if ingest_token:
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(
            update={"ingest_token": ingest_token})})
    alertmanager = os.environ.get(ENV_ALERTMANAGER_URL)
    if alertmanager:
        cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(
            update={"alertmanager_url": alertmanager})})
    return cfg
