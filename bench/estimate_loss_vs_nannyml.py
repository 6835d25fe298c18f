"""mqm's estimated MAE and RMSE (direct loss estimation) against NannyML 0.13.1's DLE.

Run by hand, not by pytest. NannyML cannot be installed beside mqm's locked packages (it
requires python-dateutil<3; mqm locks 4.0.0), so give it a venv of its own::

    python3 -m venv /tmp/nml
    /tmp/nml/bin/pip install -q --require-hashes --no-deps -r requirements-test.lock
    /tmp/nml/bin/pip install -q nannyml==0.13.1   # moves python-dateutil to 2.9
    NML_DISABLE_USAGE_LOGGING=1 /tmp/nml/bin/python bench/estimate_loss_vs_nannyml.py

The data are those of ``tests/checks/test_estimated_loss.py``: y = f(x) + sigma(x) N(0, 1)
with the model predicting f(x), so each window also has its exact expected MAE and RMSE
given its inputs (``truth``). A reference of 20,000 rows; windows of 20,000 rows, as drawn
and under covariate shift. Both sides see the same rows; NannyML fits LightGBM
(``LGBMRegressor()``), mqm ``HistGradientBoostingRegressor`` with LightGBM's defaults, so
their estimates differ by the two fits' model error, not by formula. The sampling errors
are the same formulas and must agree to rounding.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML posts usage otherwise

from monitor.checks.estimated_loss import LossEstimator  # noqa: E402
from tests.checks.test_estimated_loss import KINDS, ROOT_2_OVER_PI, draw  # noqa: E402

WINDOWS = {"as drawn": (0.0, 1.5), "x1 moved to 1": (1.0, 1.0),
           "x1 moved to 2": (2.0, 1.0), "x1 narrowed": (0.0, 0.5)}


def frame(features: pd.DataFrame, y: pd.Series, pred: pd.Series) -> pd.DataFrame:
    return features.assign(c=features["c"].astype("category"), y_pred=pred, y_true=y)


def nannyml_estimate(reference: pd.DataFrame, window: pd.DataFrame
                     ) -> dict[str, tuple[float, float]]:
    """NannyML's estimate and sampling error of MAE and RMSE over the window as one chunk.
    Its RMSE threshold calls scikit-learn's ``mean_squared_error(squared=False)``, which
    scikit-learn 1.6 removed; the realized RMSE it needs there is given back by hand."""
    import nannyml
    from nannyml.performance_estimation.direct_loss_estimation import metrics as dle_metrics

    def realized_rmse(self: object, data: pd.DataFrame) -> float:
        if "y_true" not in data.columns:  # a window without labels, as NannyML's own
            return math.nan
        error = data["y_true"] - data["y_pred"]
        return float(np.sqrt(np.mean(error**2)))

    dle_metrics.RMSE.realized_performance = realized_rmse  # type: ignore[method-assign]
    estimator = nannyml.DLE(feature_column_names=list(KINDS), y_pred="y_pred",
                            y_true="y_true", metrics=["mae", "rmse"], chunk_number=1)
    estimator.fit(reference)
    out = estimator.estimate(window.drop(columns=["y_true"])).filter(period="analysis").to_df()
    return {m: (float(out[(m, "value")].iloc[0]), float(out[(m, "sampling_error")].iloc[0]))
            for m in ("mae", "rmse")}


def main() -> None:
    ref_features, ref_y, ref_pred, _ = draw(20_000, 0)
    ours = LossEstimator.fit(ref_features, KINDS, ref_y, ref_pred)
    reference = frame(ref_features, ref_y, ref_pred)
    print("| window | metric | truth | realized | mqm | NannyML | mqm - NannyML | mqm error "
          "| NannyML error | sampling error (mqm / NannyML) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gaps: list[float] = []
    for name, (mean, spread) in WINDOWS.items():
        features, y, pred, s = draw(20_000, 1, mean=mean, spread=spread)
        _, metrics, errors = ours.estimate(features, pred)
        theirs = nannyml_estimate(reference, frame(features, y, pred))
        error = y.to_numpy() - pred.to_numpy()
        truths = {"mae": float(np.mean(s)) * ROOT_2_OVER_PI,
                  "rmse": math.sqrt(float(np.mean(s**2)))}
        realized = {"mae": float(np.mean(np.abs(error))),
                    "rmse": float(np.sqrt(np.mean(error**2)))}
        for metric in ("mae", "rmse"):
            mine, (their, their_error) = metrics[metric], theirs[metric]
            assert mine is not None
            truth = truths[metric]
            gaps.append(abs(mine - their) / their)
            print(f"| {name} | {metric} | {truth:.4f} | {realized[metric]:.4f} | {mine:.4f} "
                  f"| {their:.4f} | {mine - their:+.4f} ({(mine - their) / their:+.1%}) "
                  f"| {mine - truth:+.4f} | {their - truth:+.4f} "
                  f"| {errors[metric]:.5f} / {their_error:.5f} |", flush=True)
    print(f"\nlargest relative gap mqm vs NannyML: {max(gaps):.2%}")


if __name__ == "__main__":
    main()
