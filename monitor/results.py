"""A whole check run's result: its sections, its status, and its figures as metrics.

Pure: the pipeline fills it, the store keeps ``as_dict()`` and ``metrics()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.store.runs import Metric

__all__ = ["SECTIONS", "CheckRun", "overall_status", "schema_metrics"]

SECTIONS = ("schema", "drift", "performance", "service")
_RANK = {"ok": 0, "skipped": 0, "insufficient_data": 0, "warn": 1, "error": 2, "critical": 3}


def overall_status(sections: dict[str, dict[str, Any]], rows: int, min_rows: int) -> str:
    """Worst section wins; too few rows is never critical; a failed check is an error run.

    An ``error`` section (a check that could not run) makes the run ``error`` unless
    another section is critical on its own evidence: an error alone must never count
    as bad quality.
    """
    if rows < min_rows:
        return "insufficient_data"
    worst = max((sec.get("status", "ok") for sec in sections.values()),
                key=lambda s: _RANK.get(s, 0), default="ok")
    if worst in ("skipped", "insufficient_data"):
        return "ok"
    return worst


def schema_metrics(schema: dict[str, Any]) -> list[Metric]:
    """Figures of a schema section (``SchemaResult.as_dict()``), for schema-only and full runs."""
    out = [
        Metric("schema", "violation_rate", schema["violation_rate"]),
        Metric("schema", "missing_columns", float(len(schema["missing_columns"]))),
        Metric("schema", "unexpected_columns", float(len(schema["unexpected_columns"]))),
    ]
    for col in schema["columns"]:
        if col["state"] != "present":
            continue
        for name in ("null_rate", "type_mismatch_rate", "out_of_range_rate",
                     "unseen_category_rate", "violation_rate"):
            out.append(Metric("schema", name, col[name], col["column"]))
    return out


@dataclass(frozen=True)
class CheckRun:
    model: str
    start: datetime
    end: datetime
    rows: int
    status: str
    checks: dict[str, dict[str, Any]]
    reasons: tuple[str, ...]
    config_hash: str
    reference_version: str | None
    sampled: bool = False
    sample_rows: int | None = None
    run_id: int | None = None
    recomputes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
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
            "checks": self.checks,
        }

    def metrics(self) -> list[Metric]:
        """The run's figures as (check, metric, feature, value) rows for dashboards and alerts."""
        out = [Metric("run", "rows", float(self.rows))]
        schema = self.checks.get("schema", {})
        if "violation_rate" in schema:
            out += schema_metrics(schema)
        drift = self.checks.get("drift", {})
        if "share_drifted" in drift:
            out.append(Metric("drift", "share_drifted", drift["share_drifted"]))
            out.append(Metric("drift", "dataset_drift", float(drift["dataset_drift"])))
            for feat in drift.get("features", []):
                name = feat["feature"]
                out.append(Metric("drift", "score", feat["score"], name))
                out.append(Metric("drift", "drifted", float(feat["drifted"]), name))
                out.append(Metric("drift", "null_rate_change", feat["null_rate_change"], name))
                if feat.get("unseen_share") is not None:
                    out.append(Metric("drift", "unseen_share", feat["unseen_share"], name))
        perf = self.checks.get("performance", {})
        if "label_coverage" in perf:
            out.append(Metric("performance", "label_coverage", perf["label_coverage"]))
            out.append(Metric("performance", "mature", float(perf["mature"])))
            for name, value in perf.get("metrics", {}).items():
                out.append(Metric("performance", name, value))
            for name, value in perf.get("drops", {}).items():
                out.append(Metric("performance", f"{name}_drop", value))
            est = perf.get("estimated", {})
            if est.get("estimated_accuracy") is not None:
                out.append(Metric("performance", "estimated_accuracy",
                                  est["estimated_accuracy"]))
        service = self.checks.get("service", {})
        for name in ("error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                     "throughput_per_s", "fallback_rate"):
            if name in service:
                out.append(Metric("service", name, service[name]))
        # Rows per fallback reason; the reason goes where a feature name would.
        for reason, count in (service.get("fallbacks") or {}).items():
            out.append(Metric("service", "fallback_rows", float(count), reason))
        return out
