"""Service health: quantiles equal numpy's, and each status path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitor.checks.health import check_service
from monitor.config import ServiceConfig

DAY = 86_400.0


def window(n: int, *, error_rate: float = 0.01, seed: int = 0) -> tuple[pd.Series, pd.Series]:
    """Lognormal latencies with a few nulls (requests that failed before timing)."""
    rng = np.random.default_rng(seed)
    latency = pd.Series(rng.lognormal(np.log(26), 0.35, n))
    latency[rng.uniform(size=n) < 0.02] = np.nan
    return latency, pd.Series(rng.uniform(size=n) < error_rate)


def test_quantiles_and_rates_equal_numpy() -> None:
    latency, error = window(20_000)
    res = check_service(latency, error, window_seconds=DAY, config=ServiceConfig())
    values = latency.dropna().to_numpy()
    assert res.latency_p50_ms == pytest.approx(np.percentile(values, 50), abs=1e-9)
    assert res.latency_p95_ms == pytest.approx(np.percentile(values, 95), abs=1e-9)
    assert res.latency_p99_ms == pytest.approx(np.percentile(values, 99), abs=1e-9)
    assert (res.rows, res.errors) == (20_000, int(error.sum()))
    assert res.error_rate == pytest.approx(error.mean())
    assert res.throughput_per_s == pytest.approx(20_000 / DAY)
    assert (res.status, res.reasons) == ("ok", ())
    json.dumps(res.as_dict())


def test_linear_interpolation_on_a_small_window() -> None:
    res = check_service(pd.Series([10.0, 20.0, None, 40.0]), pd.Series([False] * 4),
                        window_seconds=60, config=ServiceConfig())
    assert res.latency_p50_ms == 20.0  # numpy.percentile([10, 20, 40], 50)
    assert res.latency_p99_ms == pytest.approx(20 + 0.98 * (40 - 20))  # rank 1.98 of 0..2


def test_error_rate_above_the_limit_is_critical() -> None:
    latency, error = window(10_000, error_rate=0.08, seed=1)
    res = check_service(latency, error, window_seconds=DAY, config=ServiceConfig())
    assert res.status == "critical"
    assert res.reasons == (f"error rate {error.mean():.2%} ({error.sum()} of 10000) > allowed "
                           "5.00%",)
    looser = ServiceConfig(max_error_rate=0.1)
    assert check_service(latency, error, window_seconds=DAY, config=looser).status == "ok"


def test_slow_p99_is_a_warning_only_when_a_limit_is_set() -> None:
    latency, error = window(10_000, seed=2)
    p99 = np.percentile(latency.dropna(), 99)
    assert check_service(latency, error, window_seconds=DAY,
                         config=ServiceConfig()).status == "ok"
    res = check_service(latency, error, window_seconds=DAY,
                        config=ServiceConfig(max_latency_p99_ms=p99 - 1))
    assert res.status == "warn"
    assert res.reasons == (f"latency p99 {p99:.1f} ms > allowed {p99 - 1:.1f} ms",)
    res = check_service(latency, error, window_seconds=DAY,
                        config=ServiceConfig(max_latency_p99_ms=p99 + 1))
    assert res.status == "ok"


def test_errors_and_slowness_together_are_critical_with_both_reasons() -> None:
    latency, error = window(5_000, error_rate=0.2, seed=3)
    res = check_service(latency, error, window_seconds=DAY,
                        config=ServiceConfig(max_latency_p99_ms=1.0))
    assert res.status == "critical"
    assert [r.split(" ")[0] for r in res.reasons] == ["error", "latency"]


def test_empty_window() -> None:
    empty = pd.Series([], dtype=float)
    res = check_service(empty, pd.Series([], dtype=bool), window_seconds=DAY,
                        config=ServiceConfig(max_latency_p99_ms=100))
    assert (res.rows, res.errors, res.error_rate, res.throughput_per_s) == (0, 0, 0.0, 0.0)
    assert (res.latency_p50_ms, res.latency_p95_ms, res.latency_p99_ms) == (None, None, None)
    assert res.status == "ok"


def test_no_latency_logged() -> None:
    res = check_service(pd.Series([None, None], dtype=object), pd.Series([False, True]),
                        window_seconds=10, config=ServiceConfig())
    assert res.latency_p99_ms is None
    assert (res.errors, res.error_rate, res.status) == (1, 0.5, "critical")


@pytest.mark.parametrize("flags", [
    [True, None, False, True],
    [1.0, np.nan, 0.0, 1.0],
    [1, 0, 0, 1],
    ["true", None, "f", "T"],
])
def test_error_flags_in_the_forms_logs_hold(flags: list) -> None:
    res = check_service(pd.Series([1.0] * 4), pd.Series(flags), window_seconds=4,
                        config=ServiceConfig(max_error_rate=1.0))
    assert res.errors == 2


def test_bad_window_or_misaligned_series_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        check_service(pd.Series([1.0]), pd.Series([False]), window_seconds=0,
                      config=ServiceConfig())
    with pytest.raises(ValueError, match="same length"):
        check_service(pd.Series([1.0]), pd.Series([False, True]), window_seconds=1,
                      config=ServiceConfig())
