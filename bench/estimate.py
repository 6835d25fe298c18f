"""How long the estimated performance takes: the reference fit and one window's check.

Run by hand, not by pytest::

    .venv/bin/python bench/estimate.py [--repeats 3]

Synthetic logs of a binary model (P(y=1|x) = sigmoid(2x), logged probabilities squashed
towards 0.5 so that calibration helps) and of a 10-class one (softmax of a linear score,
flattened). It times ``AccuracyEstimator.fit`` on the reference (the calibration decision:
ten isotonic fits per class, then the fit; once per reference version) and
``check_estimated`` on a window (calibrate, five expected metrics, sampling errors, band),
and the part of the check that is the accuracy alone, as before the other metrics came.
Medians of ``--repeats`` runs, in one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.checks.estimated import AccuracyEstimator, check_estimated
from monitor.config import PerformanceConfig
from monitor.schema import FeatureSpec, ModelSchema, PredictionSpec


def binary(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-2 * rng.normal(0, 1.5, rows)))
    y = (rng.uniform(size=rows) < p).astype(int)
    logged = 0.5 + (p - 0.5) * 0.6
    return (pd.DataFrame({"0": 1 - logged, "1": logged}), pd.Series(y),
            pd.Series((logged >= 0.5).astype(int)))


def multiclass(rows: int, seed: int, classes: int = 10
               ) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1.5, (classes, 4))
    logits = rng.normal(0, 1, (rows, 4)) @ weights.T
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.uniform(size=(rows, 1)) > p.cumsum(axis=1)).sum(axis=1).clip(0, classes - 1)
    logged = np.exp(logits / 2)
    logged /= logged.sum(axis=1, keepdims=True)
    return (pd.DataFrame(logged, columns=[str(c) for c in range(classes)]), pd.Series(y),
            pd.Series(logged.argmax(axis=1)))


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = PerformanceConfig()
    print("| model | reference rows | fit | calibrated | window rows | check_estimated "
          "| accuracy alone |")
    print("|---|---|---|---|---|---|---|")
    for name, make, n_classes, sizes in (
            ("binary", binary, 2, [(10_000, 100_000), (100_000, 1_000_000)]),
            ("10 classes", multiclass, 10, [(10_000, 100_000), (100_000, 1_000_000)])):
        schema = ModelSchema(model="m", features=[FeatureSpec(name="x", type="float")],
                             prediction=PredictionSpec(type="int",
                                                       classes=list(range(n_classes))))
        for ref_rows, window_rows in sizes:
            ref_p, ref_y, ref_pred = make(ref_rows, 0)
            cur_p, _, cur_pred = make(window_rows, 1)
            fit_s, est = timed(partial(AccuracyEstimator.fit, ref_p, ref_y, ref_pred, schema),
                               args.repeats)
            check_s, _ = timed(partial(check_estimated, est, cur_p, cur_pred,
                                       realized_accuracy=None, config=config), args.repeats)
            acc_s, _ = timed(partial(est.estimate, cur_p, cur_pred), args.repeats)
            print(f"| {name} | {ref_rows:,} | {fit_s:.2f} s | "
                  f"{len(est.calibrated_classes)}/{len(est.scored_classes)} | "
                  f"{window_rows:,} | {check_s:.2f} s | {acc_s:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
