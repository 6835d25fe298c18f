"""One full check run over a window: schema, drift, performance (realized and estimated),
service health. Each check runs on its own; one that fails is recorded as an error
section and the others still run.

Windows up to ``drift.max_exact_rows`` rows are read whole and every figure is exact.
Larger windows are read in chunks with bounded memory: the schema check, row and
error counts and latency quantiles stay exact, while drift and performance run on a
uniform random sample of ``max_exact_rows`` rows (seeded by the window, so a rerun
draws the same sample); the run records that it sampled and how much.
"""

from __future__ import annotations

import hashlib
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitor.checks.schema_check import SchemaAccumulator
from monitor.config import ModelConfig
from monitor.results import CheckRun, overall_status
from monitor.run.reference import ReferenceData, drift_columns
from monitor.schema import ModelSchema, label_text

if TYPE_CHECKING:
    import pandas as pd

    from monitor.store.sources import LogSource, LogWindow

__all__ = ["CHUNK_ROWS", "evaluate_window"]

CHUNK_ROWS = 200_000


def _section(name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one check; a failure becomes an error section naming the cause."""
    try:
        return compute()
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "at": f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}"}


def _seed(model: str, start: datetime) -> int:
    return int.from_bytes(hashlib.sha256(f"{model}|{start.isoformat()}".encode()).digest()[:8],
                          "little")


def _drift_frame(window: LogWindow, schema: ModelSchema) -> pd.DataFrame:
    kinds = drift_columns(schema)
    frame = window.features.reindex(columns=[c for c in kinds if c != schema.prediction.column])
    frame[schema.prediction.column] = window.meta["prediction"].to_numpy()
    return frame


def _perf_frame(window: LogWindow) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({"prediction": window.meta["prediction"].to_numpy(),
                          "label": window.labels.to_numpy()})
    for cls in window.probabilities.columns:
        frame[f"proba:{cls}"] = window.probabilities[cls].to_numpy()
    keep = ~window.meta["error"].to_numpy(dtype=bool) & frame["prediction"].notna().to_numpy()
    return frame[keep].reset_index(drop=True)


def evaluate_window(
    source: LogSource,
    *,
    model: str,
    model_cfg: ModelConfig,
    schema: ModelSchema,
    reference: ReferenceData | None,
    reference_error: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
    config_hash: str,
    count_fallbacks: bool = False,
) -> CheckRun:
    """Read the window and run every check on it (no writes).

    ``count_fallbacks``: the source records why the serving guard answered with its
    default (mqm's own table does); the rows per reason go to the service check.
    """
    import numpy as np
    import pandas as pd

    rows = source.count(start, end)
    limit = model_cfg.drift.max_exact_rows
    sampled = rows > limit
    schema_acc = SchemaAccumulator(schema, model_cfg.schema_check)
    latencies: list[np.ndarray] = []
    error_parts: list[np.ndarray] = []
    drift_parts: list[pd.DataFrame] = []
    perf_parts: list[pd.DataFrame] = []
    fallback_counts: Counter[str] | None = Counter() if count_fallbacks else None
    rng = np.random.default_rng(_seed(model, start))
    chunks = source.iter_chunks(start, end, CHUNK_ROWS) if sampled else iter(
        [source.read_window(start, end)])
    for window in chunks:
        schema_acc.add(window.features, window.meta["prediction"])
        latencies.append(pd.to_numeric(window.meta["latency_ms"], errors="coerce").to_numpy(
            dtype=float))
        error_parts.append(window.meta["error"].to_numpy(dtype=bool))
        if fallback_counts is not None and window.fallback_reasons is not None:
            # "" counts the rows the model answered itself.
            fallback_counts.update(window.fallback_reasons.fillna("").value_counts().to_dict())
        drift_part, perf_part = _drift_frame(window, schema), _perf_frame(window)
        if sampled:
            # Bernoulli sample: uniform over the window whatever the chunk order.
            keep = rng.random(len(drift_part)) < limit / rows
            drift_part = drift_part[keep]
            perf_part = perf_part[keep[~window.meta["error"].to_numpy(dtype=bool)
                                       & window.meta["prediction"].notna().to_numpy()]]
        drift_parts.append(drift_part)
        perf_parts.append(perf_part)
    drift_frame = pd.concat(drift_parts, ignore_index=True) if drift_parts else pd.DataFrame()
    perf = pd.concat(perf_parts, ignore_index=True) if perf_parts else pd.DataFrame()
    latency = np.concatenate(latencies) if latencies else np.array([], dtype=float)
    error_flags = np.concatenate(error_parts) if error_parts else np.array([], dtype=bool)

    checks: dict[str, dict[str, Any]] = {}
    schema_result = schema_acc.result(model_cfg.min_rows)
    checks["schema"] = schema_result.as_dict()

    def need_reference() -> ReferenceData:
        if reference is None:
            raise RuntimeError(reference_error or "reference set unavailable")
        return reference

    def drift() -> dict[str, Any]:
        from monitor.checks.drift import check_drift

        result = check_drift(need_reference().drift_profile, drift_frame,
                             config=model_cfg.drift)
        out = result.as_dict()
        drifted = [f for f in result.features if f.drifted]
        if result.dataset_drift:
            out["status"] = model_cfg.drift.severity
        elif drifted:
            out["status"] = "warn"
        else:
            out["status"] = "ok"
        untested = [f for f in result.features if f.error]
        reasons = [f"{len(drifted)} of {len(result.features) - len(untested)} columns drifted "
                   f"(share {result.share_drifted:.0%}, limit {result.drift_share:.0%})"]
        reasons += [f"{f.feature}: {f.method} {f.score:.4g} vs threshold {f.threshold:.4g}"
                    for f in drifted if f.score is not None and f.threshold is not None]
        reasons += [f"{f.feature}: not tested ({f.error})" for f in untested]
        out["reasons"] = reasons if drifted or untested else []
        return out

    def performance() -> dict[str, Any]:
        from monitor.checks.estimated import check_estimated
        from monitor.checks.performance import check_performance

        ref = need_reference()
        labels = perf["label"] if "label" in perf else pd.Series([], dtype=object)
        preds = perf["prediction"] if "prediction" in perf else pd.Series([], dtype=object)
        proba_cols = [c for c in perf.columns if c.startswith("proba:")]
        probs = perf[proba_cols].rename(columns=lambda c: c[len("proba:"):]) if proba_cols \
            else None
        if schema.task == "classification":
            preds, labels = label_text(preds), label_text(labels)
        result = check_performance(preds, labels, probs, ref.metrics, schema,
                                   config=model_cfg.performance, window_end=end, now=now)
        out = result.as_dict()
        if schema.task == "classification":
            realized = result.metrics.get("accuracy") if result.labelled_rows else None
            est = check_estimated(ref.estimator, probs, preds, realized_accuracy=realized,
                                  config=model_cfg.performance)
            out["estimated"] = est.as_dict()
            if est.status == "warn" and result.status in ("ok", "skipped"):
                out["status"] = "warn"
                out["reasons"] = [*out.get("reasons", []), *est.reasons]
        return out

    def service() -> dict[str, Any]:
        from monitor.checks.health import check_service

        result = check_service(pd.Series(latency), pd.Series(error_flags),
                               window_seconds=(end - start).total_seconds(),
                               config=model_cfg.service, fallback_counts=fallback_counts)
        return result.as_dict()

    checks["drift"] = _section("drift", drift)
    checks["performance"] = _section("performance", performance)
    checks["service"] = _section("service", service)
    status = overall_status(checks, rows, model_cfg.min_rows)
    reasons: list[str] = []
    if status == "insufficient_data":
        reasons.append(f"{rows} rows < min_rows {model_cfg.min_rows}")
    for name, sec in checks.items():
        if sec.get("status") in ("warn", "critical", "error"):
            if sec.get("status") == "error":
                reasons.append(f"{name}: could not run: {sec.get('error')}")
            reasons += [f"{name}: {r}" for r in sec.get("reasons", [])]
    return CheckRun(
        model=model, start=start, end=end, rows=rows, status=status, checks=checks,
        reasons=tuple(reasons), config_hash=config_hash,
        reference_version=reference.version if reference else None,
        sampled=sampled, sample_rows=len(drift_frame) if sampled else None,
        extra={"computed_at": now.astimezone(UTC).isoformat()},
    )
