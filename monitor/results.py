"""The typed check run: one frozen dataclass per section, each with its status and
reasons, and the run that holds them.

Checks return these sections; the run stays typed until it leaves the process. JSON
exists only at the edges: ``as_dict()`` where the store, the API or the CLI writes a
run, ``CheckRun.from_dict`` where the store reads one back. Standard library only, so
that reading a run (the API, a metrics scrape) loads no pandas.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from monitor.typed_json import from_json

__all__ = [
    "RUN_STATUSES",
    "SECTIONS",
    "SEGMENT_STATUS_LEVEL",
    "VERSION_FIGURES",
    "CheckRun",
    "ColumnKind",
    "ColumnReport",
    "DriftResult",
    "DriftStatus",
    "ErrorSection",
    "EstimatedLossResult",
    "EstimatedResult",
    "FeatureDrift",
    "FeatureImportance",
    "Metric",
    "MultivariateResult",
    "NotApplicable",
    "PerformanceResult",
    "SchemaResult",
    "Section",
    "SegmentResult",
    "SegmentsResult",
    "ServiceResult",
    "VersionComparison",
    "VersionFigures",
    "VersionsResult",
    "overall_status",
    "schema_metrics",
    "segment_metrics",
    "version_metrics",
]

SECTIONS = ("schema", "drift", "performance", "service", "versions", "segments", "multivariate")
RUN_STATUSES = ("ok", "warn", "critical", "insufficient_data", "error")
_RANK = {"ok": 0, "skipped": 0, "not_applicable": 0, "insufficient_data": 0, "warn": 1,
         "error": 2, "critical": 3}

ColumnKind = Literal["num", "cat"]
SchemaStatus = Literal["ok", "warn", "critical", "insufficient_data"]
DriftStatus = Literal["ok", "warn", "critical"]
PerformanceStatus = Literal["ok", "warn", "critical", "skipped"]


@dataclass(frozen=True)
class Metric:
    """One figure of a run, as stored in ``run_metrics``: per check, metric and feature."""

    check: str
    metric: str
    value: float | None
    feature: str = ""


# --- sections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorSection:
    """A check that could not run: why, and where it failed. Never a quality verdict."""

    error: str
    at: str
    status: Literal["error"] = "error"

    @property
    def reasons(self) -> tuple[str, ...]:
        return ()

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.error, "at": self.at}


@dataclass(frozen=True)
class NotApplicable:
    """A check that does not apply to the model, and why: the performance of a model whose
    contract declares no prediction (``task: features``). Neither a verdict nor a failure:
    it never makes a run ``error`` and never moves the fallback flag."""

    reason: str
    status: Literal["not_applicable"] = "not_applicable"

    @property
    def reasons(self) -> tuple[str, ...]:
        return ()

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason}


@dataclass(frozen=True)
class ColumnReport:
    column: str
    role: Literal["feature", "prediction"]
    expected_type: str | None
    state: Literal["present", "missing", "unexpected"]
    null_rate: float = 0.0
    nulls_allowed: bool = True
    type_mismatch_rate: float = 0.0
    out_of_range_rate: float = 0.0
    unseen_category_rate: float = 0.0
    violation_rate: float = 0.0
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaResult:
    rows: int
    status: SchemaStatus
    violation_rate: float
    violating_rows: int
    columns: tuple[ColumnReport, ...]
    missing_columns: tuple[str, ...]
    unexpected_columns: tuple[str, ...]
    reasons: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def column(self, name: str) -> ColumnReport:
        for col in self.columns:
            if col.column == name:
                return col
        raise KeyError(name)


@dataclass(frozen=True)
class FeatureDrift:
    """One column. Null rates count rows without a value once normalised (None, NaN, and in a
    numeric column anything not a number); +-inf is dropped from the test, as by Evidently, but
    is no null. ``unseen_share``: share of the window's non-null categories the reference lacks."""

    feature: str
    kind: ColumnKind
    method: str | None
    score: float | None
    threshold: float | None
    drifted: bool
    null_rate_reference: float
    null_rate_current: float
    null_rate_change: float
    unseen_share: float | None
    error: str | None = None


@dataclass(frozen=True)
class DriftResult:
    """The drift section. ``status``: ``severity`` (from the config) when the dataset
    drifts, ``warn`` when some columns drift, else ``ok``."""

    features: tuple[FeatureDrift, ...]
    share_drifted: float
    drift_share: float
    dataset_drift: bool
    rows_reference: int
    rows_current: int
    status: DriftStatus = "ok"
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data; a NaN score (Evidently's too, e.g. chisquare over one category) becomes
        None so the dict is valid JSON (PostgreSQL's JSON types reject NaN)."""
        out = asdict(self)
        for feature in out["features"]:
            if feature["score"] is not None and not math.isfinite(feature["score"]):
                feature["score"] = None
        return out

    def feature(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.feature == name:
                return feature
        raise KeyError(name)


@dataclass(frozen=True)
class EstimatedResult:
    """Performance estimated without labels (CBPE), and its judgement.

    ``sampling_error``: of the estimated accuracy in a window of ``rows_used`` rows;
    ``lower_bound``..``upper_bound``: its 3-sigma confidence band, within [0, 1].
    ``metrics``: expected accuracy, f1, precision, recall and roc_auc (binary: of the
    positive class; multiclass: macro), with their ``sampling_errors``. ``calibrated``:
    the classes whose scores the reference calibrates; ``calibration``: per scored class,
    why or why not. Fields after ``reasons`` came later: older documents read back with
    their defaults.
    """

    estimated_accuracy: float | None
    reference_accuracy: float | None  # None only when there is no estimator
    drop: float | None
    realized_accuracy: float | None
    rows_used: int
    status: Literal["ok", "warn", "skipped"]
    reasons: tuple[str, ...]
    sampling_error: float | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    sampling_errors: dict[str, float | None] = field(default_factory=dict)
    calibrated: tuple[str, ...] = ()
    calibration: dict[str, str] = field(default_factory=dict)
    # Per metric of ``metrics`` its 3-sigma band, within [0, 1].
    lower_bounds: dict[str, float | None] = field(default_factory=dict)
    upper_bounds: dict[str, float | None] = field(default_factory=dict)

    @property
    def headline(self) -> tuple[str, float | None, float | None, float | None]:
        """The estimate's main figure, as views show it: (metric, estimated, reference,
        drop)."""
        return "accuracy", self.estimated_accuracy, self.reference_accuracy, self.drop

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EstimatedLossResult:
    """Regression performance estimated without labels (DLE: a model of the loss fitted on
    the reference), and its judgement: the sibling of ``EstimatedResult`` for regressors.

    ``rise``: relative, (estimated MAE - reference MAE) / reference MAE, positive when
    worse; ``sampling_error``: of the estimated MAE in a window of ``rows_used`` rows;
    ``lower_bound``..``upper_bound``: its 3-sigma band (at least 0). ``metrics``: the
    estimated mae and rmse, with their ``sampling_errors`` and bands (``lower_bounds``,
    ``upper_bounds``); ``reference_metrics``: both realized on the reference rows.
    ``realized_mae`` is the window's own once labels arrive, carried to be shown beside.
    """

    estimated_mae: float | None
    reference_mae: float | None  # None only when there is no estimator
    rise: float | None
    realized_mae: float | None
    rows_used: int
    status: Literal["ok", "warn", "skipped"]
    reasons: tuple[str, ...]
    sampling_error: float | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    sampling_errors: dict[str, float | None] = field(default_factory=dict)
    lower_bounds: dict[str, float | None] = field(default_factory=dict)
    upper_bounds: dict[str, float | None] = field(default_factory=dict)
    reference_metrics: dict[str, float | None] = field(default_factory=dict)
    method: str = "dle"

    @property
    def headline(self) -> tuple[str, float | None, float | None, float | None]:
        """The estimate's main figure, as views show it: (metric, estimated, reference,
        rise)."""
        return "mae", self.estimated_mae, self.reference_mae, self.rise

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PerformanceResult:
    """Realized metrics against the reference, and the estimate without labels
    (``estimated``: CBPE's ``EstimatedResult`` for classifiers, DLE's
    ``EstimatedLossResult`` for regressors), whose warning shows in ``status`` while the
    realized metrics are not judged."""

    task: str
    rows: int
    labelled_rows: int
    label_coverage: float
    mature: bool
    metrics: dict[str, float | None]
    reference_metrics: dict[str, float | None]
    drops: dict[str, float | None]
    status: PerformanceStatus
    reasons: tuple[str, ...]
    estimated: EstimatedResult | EstimatedLossResult | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.estimated is None:
            del out["estimated"]
        return out


@dataclass(frozen=True)
class ServiceResult:
    rows: int
    errors: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    throughput_per_s: float
    status: Literal["ok", "warn", "critical"]
    reasons: tuple[str, ...]
    # Share of rows the serving guard answered with the default prediction, and the
    # count per reason; None where the source cannot tell (a user's own table).
    fallback_rate: float | None = None
    fallbacks: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.fallback_rate is None:
            del out["fallback_rate"], out["fallbacks"]
        return out


def _section_from(kind: type, raw: Any, where: str) -> Any:
    """One section back from its dict: its own type, or an error / not-applicable one."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object")
    status = raw.get("status")
    target = (ErrorSection if status == "error" else
              NotApplicable if status == "not_applicable" else kind)
    return from_json(target, raw, where)


@dataclass(frozen=True)
class SegmentResult:
    """The checks of one segment: the window's rows whose ``column`` holds ``value``
    (``__other__``: the values beyond ``max_values``; ``__null__``: no value).

    ``reference``: what drift and accuracy were compared with, ``segment`` (the reference
    rows of the same segment, ``reference_rows`` of them) or ``whole`` (the whole
    reference set; ``reference_note`` says why). A segment with fewer rows than
    ``min_rows`` is ``insufficient_data`` and has no sections.
    """

    column: str
    value: str
    rows: int
    status: Literal["ok", "warn", "critical", "insufficient_data"]
    reasons: tuple[str, ...]
    reference: Literal["segment", "whole"] = "whole"
    reference_rows: int = 0
    reference_note: str | None = None
    schema: SchemaResult | ErrorSection | None = None
    drift: DriftResult | ErrorSection | None = None
    performance: PerformanceResult | ErrorSection | NotApplicable | None = None
    # Rows drift and performance read when the segment had more than segments.max_rows
    # (a uniform sample); None: all of them.
    sample_rows: int | None = None

    @property
    def key(self) -> str:
        """``column=value``: how reasons, figures and metric labels name the segment."""
        return f"{self.column}={self.value}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "column": self.column, "value": self.value, "rows": self.rows,
            "status": self.status, "reasons": list(self.reasons),
            "reference": self.reference, "reference_rows": self.reference_rows,
            "reference_note": self.reference_note, "sample_rows": self.sample_rows}
        for name in ("schema", "drift", "performance"):
            sec = getattr(self, name)
            out[name] = None if sec is None else sec.as_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> SegmentResult:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object")
        kinds = {"schema": SchemaResult, "drift": DriftResult,
                 "performance": PerformanceResult}
        sections = {name: _section_from(kind, raw.get(name), f"{where}.{name}")
                    for name, kind in kinds.items()}
        plain = from_json(cls, {k: v for k, v in raw.items() if k not in kinds}, where)
        return replace(plain, **sections)


@dataclass(frozen=True)
class SegmentsResult:
    """The segments section: one ``SegmentResult`` per segment of each column, the most
    frequent first. ``status``: the worst segment's, capped at ``severity`` (``none``:
    always ok, the reasons kept for the record). ``folded``: per column, how many
    distinct values went into ``__other__``."""

    columns: tuple[str, ...]
    segments: tuple[SegmentResult, ...]
    severity: Literal["none", "warn", "critical"]
    status: Literal["ok", "warn", "critical"]
    reasons: tuple[str, ...]
    folded: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns),
                "segments": [seg.as_dict() for seg in self.segments],
                "severity": self.severity, "status": self.status,
                "reasons": list(self.reasons), "folded": dict(self.folded)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> SegmentsResult:
        segments = raw.get("segments") or []
        if not isinstance(segments, list):
            raise ValueError(f"{where}.segments: expected a list")
        plain = from_json(cls, {**raw, "segments": []}, where)
        return replace(plain, segments=tuple(
            SegmentResult.from_dict(seg, f"{where}.segments[{i}]")
            for i, seg in enumerate(segments)))

    def segment(self, column: str, value: str) -> SegmentResult:
        for seg in self.segments:
            if seg.column == column and seg.value == value:
                return seg
        raise KeyError(f"{column}={value}")


@dataclass(frozen=True)
class FeatureImportance:
    """How much the domain classifier's held-out ROC AUC drops when one feature is
    shuffled (permutation importance, mean over repeats): what moved."""

    feature: str
    importance: float


@dataclass(frozen=True)
class MultivariateResult:
    """Multivariate drift: a domain classifier telling the window's rows from the
    reference's, and the PCA reconstruction error of the numerical features.

    ``auc``: the classifier's cross-validated ROC AUC (mean over ``folds``), 0.5 when the
    two cannot be told apart; ``auc_lower``..``auc_upper`` its 95% confidence interval
    (DeLong variance per held-out fold). ``reconstruction_*``: the window's mean error,
    the reference's (held out from the PCA fit) and its 3-sigma band for a mean over
    ``rows_current`` rows; None when fewer than two numerical features or not asked.
    """

    rows_reference: int
    rows_current: int
    features: tuple[str, ...]
    status: Literal["ok", "warn", "critical", "insufficient_data"]
    reasons: tuple[str, ...]
    auc: float | None = None
    auc_lower: float | None = None
    auc_upper: float | None = None
    auc_threshold: float | None = None
    folds: int = 0
    top_features: tuple[FeatureImportance, ...] = ()
    reconstruction_error: float | None = None
    reconstruction_reference: float | None = None
    reconstruction_lower: float | None = None
    reconstruction_upper: float | None = None
    components: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionFigures:
    """One model version's rows of a window, against the reference.

    ``correct`` of ``labelled_rows`` predictions were right; ``accuracy`` is their share
    once the window's labels are mature (None before, and for regressors). The estimate
    is CBPE's on the version's rows, with its sampling error; the prediction drift is the
    prediction column of the version's rows tested against the reference's.
    """

    version: str
    rows: int
    errors: int
    error_rate: float
    latency_p95_ms: float | None
    labelled_rows: int = 0
    correct: int = 0
    accuracy: float | None = None
    accuracy_drop: float | None = None
    estimated_accuracy: float | None = None
    estimated_sampling_error: float | None = None
    estimated_rows: int = 0
    prediction_drift_method: str | None = None
    prediction_drift_score: float | None = None
    prediction_drift_threshold: float | None = None
    prediction_drifted: bool | None = None


@dataclass(frozen=True)
class VersionComparison:
    """Two versions of one window compared on the same traffic period: realized accuracy
    (two-proportion z-test) once labels are mature, else the estimate (z-test on CBPE's
    sampling errors). ``better`` is None when the difference is not significant at
    ``alpha`` or cannot be tested."""

    a: str
    b: str
    basis: Literal["accuracy", "estimated_accuracy", "none"]
    value_a: float | None
    value_b: float | None
    p_value: float | None
    better: str | None


@dataclass(frozen=True)
class VersionsResult:
    """The versions section: each version seen in the window (most rows first) and each
    pair compared. Informational: it never judges the run (``ok``), its ``reasons`` say
    which version did better where the evidence shows it."""

    versions: tuple[VersionFigures, ...]
    comparisons: tuple[VersionComparison, ...]
    mature: bool
    alpha: float
    status: Literal["ok"] = "ok"
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for ver in out["versions"]:
            score = ver["prediction_drift_score"]
            if score is not None and not math.isfinite(score):
                ver["prediction_drift_score"] = None
        return out

    def version(self, name: str) -> VersionFigures:
        for ver in self.versions:
            if ver.version == name:
                return ver
        raise KeyError(name)


Section = (SchemaResult | DriftResult | PerformanceResult | ServiceResult | VersionsResult
           | SegmentsResult | MultivariateResult | ErrorSection | NotApplicable)


# --- the run ----------------------------------------------------------------------------


def overall_status(sections: typing.Iterable[Section], rows: int, min_rows: int) -> str:
    """Worst section wins; too few rows is never critical; a failed check is an error run.

    An ``error`` section (a check that could not run) makes the run ``error`` unless
    another section is critical on its own evidence: an error alone must never count
    as bad quality.
    """
    if rows < min_rows:
        return "insufficient_data"
    worst = max((sec.status for sec in sections), key=lambda s: _RANK.get(s, 0), default="ok")
    if worst in ("skipped", "insufficient_data", "not_applicable"):
        return "ok"
    return worst


# The estimated metrics a window's figures keep with their band, so that charts over
# windows draw them beside the realized ones (accuracy has its own names, above).
_CHARTED_ESTIMATES = ("f1", "roc_auc", "mae", "rmse")


def _estimated_metrics(est: EstimatedResult | EstimatedLossResult) -> list[Metric]:
    """``estimated_<metric>`` and its band (``_lower``, ``_upper``) per charted metric."""
    out = []
    for name in _CHARTED_ESTIMATES:
        value = est.metrics.get(name)
        if value is None:
            continue
        out.append(Metric("performance", f"estimated_{name}", value))
        out.append(Metric("performance", f"estimated_{name}_lower", est.lower_bounds.get(name)))
        out.append(Metric("performance", f"estimated_{name}_upper", est.upper_bounds.get(name)))
    return out


def schema_metrics(schema: SchemaResult) -> list[Metric]:
    """Figures of a schema section, for schema-only and full runs."""
    out = [
        Metric("schema", "violation_rate", schema.violation_rate),
        Metric("schema", "missing_columns", float(len(schema.missing_columns))),
        Metric("schema", "unexpected_columns", float(len(schema.unexpected_columns))),
    ]
    for col in schema.columns:
        if col.state != "present":
            continue
        for name in ("null_rate", "type_mismatch_rate", "out_of_range_rate",
                     "unseen_category_rate", "violation_rate"):
            out.append(Metric("schema", name, getattr(col, name), col.column))
    return out


@dataclass(frozen=True)
class CheckRun:
    """One check run over a window: its sections (None: not in the stored document),
    status and reasons, and what it was computed with."""

    model: str
    start: datetime
    end: datetime
    rows: int
    status: str
    reasons: tuple[str, ...]
    config_hash: str
    reference_version: str | None
    schema: SchemaResult | ErrorSection | None = None
    drift: DriftResult | ErrorSection | None = None
    performance: PerformanceResult | ErrorSection | NotApplicable | None = None
    service: ServiceResult | ErrorSection | None = None
    sampled: bool = False
    sample_rows: int | None = None
    run_id: int | None = None
    recomputes: int | None = None
    versions: VersionsResult | ErrorSection | NotApplicable | None = None
    segments: SegmentsResult | ErrorSection | None = None
    multivariate: MultivariateResult | ErrorSection | None = None

    @property
    def sections(self) -> dict[str, Section]:
        """The sections present, by name, in ``SECTIONS`` order."""
        found = {name: getattr(self, name) for name in SECTIONS}
        return {name: sec for name, sec in found.items() if sec is not None}

    def section(self, name: str) -> Section | None:
        """A section that ran (None when missing, failed or not applicable): what figures
        are read from."""
        sec = getattr(self, name)
        return None if isinstance(sec, ErrorSection | NotApplicable) else sec

    def as_dict(self) -> dict[str, Any]:
        """The ``mqm check --json`` document, also what the store keeps."""
        return {
            "run_id": self.run_id,
            "model": self.model,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "rows": self.rows,
            "status": self.status,
            "reasons": list(self.reasons),
            "sampled": self.sampled,
            "sample_rows": self.sample_rows,
            "config_hash": self.config_hash,
            "reference_version": self.reference_version,
            "recomputes": self.recomputes,
            "checks": {name: sec.as_dict() for name, sec in self.sections.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckRun:
        """A run back from its document (``as_dict()``). Raises ``ValueError`` naming the
        field when the document does not have that shape."""
        window = data.get("window") or {}
        checks = data.get("checks") or {}
        kinds: dict[str, type] = {"schema": SchemaResult, "drift": DriftResult,
                                  "performance": PerformanceResult, "service": ServiceResult,
                                  "multivariate": MultivariateResult,
                                  "versions": VersionsResult}
        sections: dict[str, Any] = {
            name: _section_from(kind, checks.get(name), f"checks.{name}")
            for name, kind in kinds.items()}
        raw_segments = checks.get("segments")
        if raw_segments is not None:
            if not isinstance(raw_segments, dict):
                raise ValueError("checks.segments: expected an object")
            sections["segments"] = (
                from_json(ErrorSection, raw_segments, "checks.segments")
                if raw_segments.get("status") == "error"
                else SegmentsResult.from_dict(raw_segments, "checks.segments"))
        try:
            return cls(
                model=str(data["model"]),
                start=datetime.fromisoformat(window["start"]),
                end=datetime.fromisoformat(window["end"]),
                rows=int(data["rows"]),
                status=str(data["status"]),
                reasons=tuple(str(r) for r in data.get("reasons") or ()),
                config_hash=str(data.get("config_hash") or ""),
                reference_version=data.get("reference_version"),
                sampled=bool(data.get("sampled", False)),
                sample_rows=data.get("sample_rows"),
                run_id=data.get("run_id"),
                recomputes=data.get("recomputes"),
                **sections,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a check run document: missing or bad {exc}") from None

    def metrics(self) -> list[Metric]:
        """The run's figures as (check, metric, feature, value) rows for dashboards and
        alerts; sections that could not run have none."""
        out = [Metric("run", "rows", float(self.rows))]
        schema, drift = self.section("schema"), self.section("drift")
        perf, service = self.section("performance"), self.section("service")
        if isinstance(schema, SchemaResult):
            out += schema_metrics(schema)
        if isinstance(drift, DriftResult):
            out.append(Metric("drift", "share_drifted", drift.share_drifted))
            out.append(Metric("drift", "dataset_drift", float(drift.dataset_drift)))
            for feat in drift.features:
                score = feat.score if feat.score is None or math.isfinite(feat.score) else None
                out.append(Metric("drift", "score", score, feat.feature))
                out.append(Metric("drift", "drifted", float(feat.drifted), feat.feature))
                out.append(Metric("drift", "null_rate_change", feat.null_rate_change,
                                  feat.feature))
                if feat.unseen_share is not None:
                    out.append(Metric("drift", "unseen_share", feat.unseen_share, feat.feature))
        if isinstance(perf, PerformanceResult):
            out.append(Metric("performance", "label_coverage", perf.label_coverage))
            out.append(Metric("performance", "mature", float(perf.mature)))
            for name, value in perf.metrics.items():
                out.append(Metric("performance", name, value))
            for name, value in perf.drops.items():
                out.append(Metric("performance", f"{name}_drop", value))
            est = perf.estimated
            if isinstance(est, EstimatedResult) and est.estimated_accuracy is not None:
                out.append(Metric("performance", "estimated_accuracy",
                                  est.estimated_accuracy))
                # The band (3 sampling errors), so that charts over windows can draw it.
                out.append(Metric("performance", "estimated_accuracy_lower", est.lower_bound))
                out.append(Metric("performance", "estimated_accuracy_upper", est.upper_bound))
            if est is not None and est.status != "skipped":
                out += _estimated_metrics(est)
        if isinstance(service, ServiceResult):
            for name in ("error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                         "throughput_per_s", "fallback_rate"):
                value = getattr(service, name)
                if name != "fallback_rate" or value is not None:
                    out.append(Metric("service", name, value))
            # Rows per fallback reason; the reason goes where a feature name would.
            for reason, count in (service.fallbacks or {}).items():
                out.append(Metric("service", "fallback_rows", float(count), reason))
        segments = self.section("segments")
        if isinstance(segments, SegmentsResult):
            out += segment_metrics(segments)
        out += _multivariate_metrics(self.section("multivariate"))
        versions = self.section("versions")
        if isinstance(versions, VersionsResult):
            out += version_metrics(versions)
        return out


# A segment's status as a number (run_metrics holds floats), for charts over windows.
SEGMENT_STATUS_LEVEL = {"ok": 0.0, "warn": 1.0, "critical": 2.0, "insufficient_data": -1.0}


def segment_metrics(segments: SegmentsResult) -> list[Metric]:
    """Figures per segment, the segment (``column=value``) where a feature name goes: the
    store's one row per (run, check, metric, feature) then holds segments with no new
    column. A per-feature figure of a segment would need both keys; only the segment's
    own figures are stored (its document keeps the rest)."""
    out = []
    for seg in segments.segments:
        key = seg.key
        out.append(Metric("segments", "rows", float(seg.rows), key))
        out.append(Metric("segments", "status_level", SEGMENT_STATUS_LEVEL[seg.status], key))
        drift = seg.drift
        if isinstance(drift, DriftResult):
            out.append(Metric("segments", "share_drifted", drift.share_drifted, key))
            out.append(Metric("segments", "dataset_drift", float(drift.dataset_drift), key))
        schema = seg.schema
        if isinstance(schema, SchemaResult):
            out.append(Metric("segments", "violation_rate", schema.violation_rate, key))
        perf = seg.performance
        if isinstance(perf, PerformanceResult):
            if "accuracy" in perf.metrics:
                out.append(Metric("segments", "accuracy", perf.metrics["accuracy"], key))
            est = perf.estimated
            if isinstance(est, EstimatedResult) and est.estimated_accuracy is not None:
                out.append(Metric("segments", "estimated_accuracy", est.estimated_accuracy,
                                  key))
    return out


def _multivariate_metrics(section: Section | None) -> list[Metric]:
    """The domain classifier's AUC with its interval and threshold, the reconstruction
    error with its band, and each top feature's importance."""
    if not isinstance(section, MultivariateResult) or section.status == "insufficient_data":
        return []
    out = [Metric("multivariate", name, getattr(section, name)) for name in (
        "auc", "auc_lower", "auc_upper", "auc_threshold")]
    if section.reconstruction_error is not None:
        out += [Metric("multivariate", name, getattr(section, name)) for name in (
            "reconstruction_error", "reconstruction_lower", "reconstruction_upper")]
    out += [Metric("multivariate", "importance", f.importance, f.feature)
            for f in section.top_features]
    return out


# Per-version figures stored in ``run_metrics`` (the version where a feature name would
# be): what ``mqm versions`` and the API add up over windows without reading documents.
VERSION_FIGURES = ("rows", "errors", "error_rate", "latency_p95_ms", "labelled_rows", "correct",
                   "accuracy", "accuracy_drop", "estimated_accuracy",
                   "estimated_sampling_error", "estimated_rows", "prediction_drift_score",
                   "prediction_drifted")


def version_metrics(section: VersionsResult) -> list[Metric]:
    """Figures of a versions section: the window's count of versions and label maturity,
    and each version's figures (``VERSION_FIGURES``)."""
    out = [Metric("versions", "versions", float(len(section.versions))),
           Metric("versions", "mature", float(section.mature))]
    for ver in section.versions:
        for name in VERSION_FIGURES:
            value = getattr(ver, name)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            out.append(Metric("versions", name, float(value), ver.version))
    return out
