"""Service health from the logs: error rate, latency quantiles and throughput of a window."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.config import ServiceConfig

__all__ = ["ServiceResult", "check_service"]

_TRUE_TEXT = frozenset({"true", "t", "1", "yes", "y"})


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _error_flags(error: pd.Series) -> np.ndarray:
    """True where a row is an error; a null flag is not an error."""
    try:
        return pd.array(error, dtype="boolean").fillna(False).to_numpy(dtype=bool)
    except (TypeError, ValueError):
        # A user's table may keep the flag as text ('true', 't', 'yes').
        return np.array([str(v).strip().lower() in _TRUE_TEXT for v in error], dtype=bool)


def check_service(
    latency_ms: pd.Series,
    error: pd.Series,
    *,
    window_seconds: float,
    config: ServiceConfig,
) -> ServiceResult:
    """Error rate and latency of one window (aligned series, one row per request); pure.

    Quantiles use linear interpolation over the non-null latencies, as
    ``numpy.percentile``; an empty window is ok with no latencies.
    """
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    if len(latency_ms) != len(error):
        raise ValueError("latency_ms and error must have the same length")
    rows = len(error)
    errors = int(_error_flags(error).sum())
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
    return ServiceResult(
        rows=rows, errors=errors, error_rate=rate, latency_p50_ms=p50, latency_p95_ms=p95,
        latency_p99_ms=p99, throughput_per_s=rows / window_seconds, status=status,
        reasons=tuple(reasons),
    )
