"""Service health from the logs: error rate, latency quantiles and throughput of a window,
and how often the serving guard answered instead of the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from monitor.config import ServiceConfig
from monitor.results import ServiceResult

__all__ = ["ServiceResult", "check_service"]

_TRUE_TEXT = frozenset({"true", "t", "1", "yes", "y"})


def _error_flags(error: pd.Series) -> np.ndarray:
    """True where a row is an error; a null flag is not an error."""
    try:
        flags: np.ndarray = pd.array(error, dtype="boolean").fillna(False).to_numpy(dtype=bool)
        return flags
    except (TypeError, ValueError):
        # A user's table may keep the flag as text ('true', 't', 'yes').
        return np.array([str(v).strip().lower() in _TRUE_TEXT for v in error], dtype=bool)


def check_service(
    latency_ms: pd.Series,
    error: pd.Series,
    *,
    window_seconds: float,
    config: ServiceConfig,
    fallback_counts: Mapping[str, int] | None = None,
) -> ServiceResult:
    """Error rate and latency of one window (aligned series, one row per request); pure.

    Quantiles use linear interpolation over the non-null latencies, as
    ``numpy.percentile``; an empty window is ok with no latencies.
    ``fallback_counts`` (rows per fallback reason, ``""`` for rows the model answered,
    counted by the database) adds the fallback rate; it is reported, not judged.
    """
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    if len(latency_ms) != len(error):
        raise ValueError("latency_ms and error must have the same length")
    rows = len(error)
    errors = int(np.count_nonzero(_error_flags(error)))
    rate = errors / rows if rows else 0.0
    lat = pd.to_numeric(latency_ms, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    lat = lat[np.isfinite(lat)]
    p50 = p95 = p99 = None
    if lat.size:
        p50, p95, p99 = (float(q) for q in np.percentile(lat, [50, 95, 99]))

    reasons: list[str] = []
    status: Literal["ok", "warn", "critical"] = "ok"
    if rate > config.max_error_rate:
        status = "critical"
        reasons.append(f"error rate {rate:.2%} ({errors} of {rows}) > allowed "
                       f"{config.max_error_rate:.2%}")
    limit = config.max_latency_p99_ms
    if limit is not None and p99 is not None and p99 > limit:
        status = "critical" if status == "critical" else "warn"
        reasons.append(f"latency p99 {p99:.1f} ms > allowed {limit:.1f} ms")
    fallback_rate = fallbacks = None
    if fallback_counts is not None:
        fallbacks = {k: int(v) for k, v in sorted(fallback_counts.items()) if k}
        total = sum(fallback_counts.values())
        # Its own total: the counts come from one query, the rows from the window read.
        fallback_rate = sum(fallbacks.values()) / total if total else 0.0
    return ServiceResult(
        rows=rows, errors=errors, error_rate=rate, latency_p50_ms=p50, latency_p95_ms=p95,
        latency_p99_ms=p99, throughput_per_s=rows / window_seconds, status=status,
        reasons=tuple(reasons), fallback_rate=fallback_rate, fallbacks=fallbacks,
    )
