"""How long the regressors' estimate without labels (direct loss estimation) takes.

Run by hand, not by pytest::

    .venv/bin/python bench/estimate_loss.py --repeats 3

A synthetic regressor with 11 inputs like the sample model's (7 numbers, 4 categories of 3
to 40 values) whose error grows with some of them. It times, ``--repeats`` times each:
``LossEstimator.fit`` on a reference of 10,000 and of 100,000 rows (the two loss models,
once per reference version, stored with its profile), the profile's round trip (pickle and
unpickle of the two models), and ``check_estimated_loss`` on a window of 1,000,000 rows
(what every check of a regressor adds; the trees score a sample of ``ESTIMATE_ROWS``,
100,000, of its rows), and the same estimate with the trees scoring every row. It prints
the median and [min-max] of each, in seconds, and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.checks.estimated_loss import LossEstimator, check_estimated_loss  # noqa: E402
from monitor.config import PerformanceConfig  # noqa: E402

NUMBERS = 7
CATEGORIES = (3, 6, 12, 40)


def draw(n: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any], pd.Series, pd.Series]:
    """Inputs, their kinds, labels and predictions of ``n`` rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(0, 1, n) for i in range(NUMBERS)})
    for i, size in enumerate(CATEGORIES):
        frame[f"c{i}"] = rng.integers(0, size, n).astype(str)
    kinds: dict[str, Any] = {c: "num" if c.startswith("x") else "cat" for c in frame.columns}
    f = frame["x0"] * 2 - frame["x1"] + (frame["c0"] == "1") * 1.0
    spread = 0.5 + frame["x0"].abs() + (frame["c1"] == "2") * 1.0
    y = f + rng.normal(0, 1, n) * spread
    return frame, kinds, y, f


def timed(label: str, repeats: int, run: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(f"{label:<46} median {statistics.median(times):7.2f} s  "
          f"[{min(times):.2f}-{max(times):.2f}]  ({repeats} runs)", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    estimators = {}
    for rows in (10_000, 100_000):
        features, kinds, y, pred = draw(rows, 0)

        def fit(features: pd.DataFrame = features, kinds: dict[str, Any] = kinds,
                y: pd.Series = y, pred: pd.Series = pred, rows: int = rows) -> None:
            estimators[rows] = LossEstimator.fit(features, kinds, y, pred)

        timed(f"fit on a {rows:,}-row reference (2 models)", args.repeats, fit)
    est = estimators[100_000]
    _, arrays = est.to_parts()
    size = sum(a.nbytes for a in arrays.values())
    timed(f"profile round trip ({size / 1e6:.1f} MB of pickles)", args.repeats,
          lambda: LossEstimator.from_parts(*est.to_parts()))
    window, _, _, window_pred = draw(args.window_rows, 1)
    config = PerformanceConfig()
    timed(f"estimate a {args.window_rows:,}-row window", args.repeats,
          lambda: check_estimated_loss(est, window, window_pred, realized_mae=None,
                                       config=config))
    timed(f"  the same, the trees scoring all {args.window_rows:,} rows", args.repeats,
          lambda: est.estimate(window, window_pred, max_rows=args.window_rows))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
