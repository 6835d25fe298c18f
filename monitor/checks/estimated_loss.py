"""Estimated regression performance without labels: direct loss estimation (DLE).

As NannyML's DLE (0.13.1, ``performance_estimation/direct_loss_estimation``): on the
reference set, where labels are known, a gradient-boosted model learns each row's loss from
the model's inputs and its prediction: one model of the absolute error |y - prediction|,
one of the squared error. A window's estimated MAE is the mean predicted absolute error of
its rows, its estimated RMSE the square root of the mean predicted squared error. NannyML
fits LightGBM; scikit-learn's ``HistGradientBoostingRegressor`` is the same algorithm
(histogram-binned gradient boosting with leaf-wise trees) and is given LightGBM's defaults
(100 trees of up to 31 leaves, learning rate 0.1, at least 20 rows a leaf, no early
stopping), so no new dependency. It holds under covariate shift (the loss given the inputs
unchanged); it cannot see concept drift.

Sampling error, as NannyML's ``sampling_error/regression.py``: for MAE the standard
deviation of the absolute error on the reference over the square root of the window's rows;
for RMSE, by the delta method, sqrt(std(e^2)^2 / (4 n mean(e^2))). The band is the estimate
+- 3 sampling errors, at least 0.

The trees score at most ``ESTIMATE_ROWS`` rows of a window (a uniform sample, seeded by its
size): 100 trees cost about 4 s per million rows and model on one CPU, and the mean of
100,000 predicted losses is already close to the window's. What the sample adds is counted:
the spread of the sampled rows' predicted losses over the square root of the sample (with
the finite-population correction) joins NannyML's sampling error in quadrature, so the band
still covers it.

A rise of the estimated MAE past ``allowed_estimated_rise`` (relative to the reference MAE)
warns only when the reference MAE also lies below the band (``estimated_band``), as the
classifier estimate's drop does.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.checks.sampling_error import BAND_SIGMAS
from monitor.config import PerformanceConfig
from monitor.errors import MonitorError
from monitor.results import EstimatedLossResult
from monitor.schema import label_text

__all__ = ["ESTIMATED_LOSSES", "ESTIMATE_ROWS", "LossEstimator", "check_estimated_loss",
           "loss_band"]

ESTIMATED_LOSSES = ("mae", "rmse")
# HistGradientBoostingRegressor bins a categorical input into at most 255 categories (one
# of them for missing values): the most frequent reference categories keep theirs, the
# others (and categories the reference lacks) count as missing.
_MAX_CATEGORIES = 254
# LightGBM's LGBMRegressor defaults, which NannyML's DLE fits with.
_HYPERPARAMETERS: dict[str, Any] = {
    "max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20,
    "l2_regularization": 0.0, "early_stopping": False, "random_state": 0,
}

ESTIMATE_ROWS = 100_000

Kind = Literal["num", "cat"]


def _one_thread() -> Any:
    """Fit and predict on one OpenMP thread: checks of several models run at once beside
    ingest, and on this project's 2-CPU machine, busy, two threads fitted 5x slower than
    one (100,000 rows: 19 s against 3.7 s) and predicted 2x slower (spinning at barriers)."""
    # threadpoolctl is a requirement of scikit-learn, so it is there wherever the fit is.
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def loss_band(value: float | None, error: float | None
              ) -> tuple[float | None, float | None]:
    """The band of an estimated loss: +-3 sampling errors, at least 0."""
    if value is None or error is None:
        return None, None
    return max(0.0, value - BAND_SIGMAS * error), value + BAND_SIGMAS * error


def _numbers(values: pd.Series) -> np.ndarray:
    out: np.ndarray = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float,
                                                                      na_value=np.nan)
    return out


@dataclass(frozen=True)
class LossEstimator:
    """The two loss models fitted on the reference; estimates a window's MAE and RMSE."""

    inputs: tuple[str, ...]  # the model's inputs the loss models read, in column order
    kinds: tuple[Kind, ...]
    # Per categorical input, its reference categories (as text), the code of each.
    categories: dict[str, tuple[str, ...]]
    absolute: Any  # fitted HistGradientBoostingRegressor of |y - prediction|
    squared: Any  # fitted HistGradientBoostingRegressor of (y - prediction)^2
    reference_mae: float
    reference_rmse: float
    reference_estimated_mae: float  # the estimates on the rows fitted on
    reference_estimated_rmse: float
    reference_rows: int
    absolute_spread: float  # std of |error| on the reference
    squared_spread: float  # std of error^2 on the reference

    @classmethod
    def fit(cls, features: pd.DataFrame, kinds: dict[str, Kind], labels: pd.Series,
            predictions: pd.Series) -> LossEstimator:
        """Fit on the reference rows that have a label and a prediction (inputs may be
        missing: the trees route missing values). ``kinds``: the inputs to read and whether
        each is numeric or categorical. Raises ``MonitorError`` when an input is absent or
        fewer than 40 rows can be used."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        if not len(features) == len(labels) == len(predictions):
            raise ValueError("features, labels and predictions must have the same length")
        absent = [c for c in kinds if c not in features.columns]
        if absent:
            raise MonitorError(f"the loss estimate needs input column(s) {', '.join(absent)}")
        pred, true = _numbers(predictions), _numbers(labels)
        usable = np.isfinite(pred) & np.isfinite(true)
        if usable.sum() < 2 * _HYPERPARAMETERS["min_samples_leaf"]:
            raise MonitorError(f"{int(usable.sum())} reference rows have a numeric label and "
                               "prediction: too few to fit the loss estimate on")
        categories = {}
        for name, kind in kinds.items():
            if kind == "cat":
                counts = label_text(features[name].iloc[usable]).value_counts()
                categories[name] = tuple(str(c) for c in counts.index[:_MAX_CATEGORIES])
        fitted = cls(tuple(kinds), tuple(kinds.values()), categories, None, None,
                     0.0, 0.0, 0.0, 0.0, int(usable.sum()), 0.0, 0.0)
        x = fitted._matrix(features.iloc[usable] if not usable.all() else features,
                           pred[usable])
        error = true[usable] - pred[usable]
        absolute, squared = np.abs(error), error**2
        mask = np.array([k == "cat" for k in fitted.kinds] + [False])
        models = []
        with _one_thread():
            for target in (absolute, squared):
                model = HistGradientBoostingRegressor(categorical_features=mask,
                                                      **_HYPERPARAMETERS)
                models.append(model.fit(x, target))
        fitted = replace(fitted, absolute=models[0], squared=models[1],
                         reference_mae=float(absolute.mean()),
                         reference_rmse=float(math.sqrt(squared.mean())),
                         absolute_spread=float(absolute.std()),
                         squared_spread=float(squared.std()))
        (mae, rmse), _ = fitted._estimates(x)
        return replace(fitted, reference_estimated_mae=mae, reference_estimated_rmse=rmse)

    def _matrix(self, features: pd.DataFrame, predictions: np.ndarray) -> np.ndarray:
        """Rows x (inputs + prediction) as floats: categories as their reference codes,
        NaN where missing or unknown."""
        x = np.empty((len(features), len(self.inputs) + 1), order="F")
        for i, (name, kind) in enumerate(zip(self.inputs, self.kinds, strict=True)):
            if name not in features.columns:
                x[:, i] = np.nan  # a column the window lacks: missing in every row
            elif kind == "num":
                x[:, i] = _numbers(features[name])
            else:
                codes = pd.Categorical(label_text(features[name]).to_numpy(),
                                       categories=list(self.categories[name])).codes
                x[:, i] = np.where(codes >= 0, codes, np.nan)
        x[:, -1] = predictions
        return x

    def _estimates(self, x: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
        """The estimated MAE and RMSE of the rows ``x``, and the spread of the predicted
        absolute and squared errors over them."""
        with _one_thread():
            absolute, squared = self.absolute.predict(x), self.squared.predict(x)
        mean_squared = float(np.mean(squared))
        # The mean predicted squared error may dip below 0 on a tiny window; RMSE cannot.
        rmse = math.sqrt(max(0.0, mean_squared))
        return (float(np.mean(absolute)), rmse), (float(np.std(absolute)),
                                                  float(np.std(squared)))

    def sampling_errors(self, rows: int) -> dict[str, float | None]:
        """Sampling error of the estimated MAE and RMSE in a window of ``rows`` rows
        (NannyML's; ``estimate`` adds what scoring a sample of the rows adds)."""
        if rows <= 0:
            return dict.fromkeys(ESTIMATED_LOSSES)
        mean_squared = self.reference_rmse**2
        rmse = (math.sqrt(self.squared_spread**2 / (4 * rows * mean_squared))
                if mean_squared > 0 else None)
        return {"mae": self.absolute_spread / math.sqrt(rows), "rmse": rmse}

    def estimate(self, features: pd.DataFrame, predictions: pd.Series, *,
                 max_rows: int = ESTIMATE_ROWS
                 ) -> tuple[int, dict[str, float | None], dict[str, float | None]]:
        """Rows used (those with a numeric prediction), the estimated MAE and RMSE of a
        window, and the sampling error of each. Past ``max_rows`` rows the trees score a
        uniform sample of them, and the sampling errors grow by what the sample adds."""
        if len(features) != len(predictions):
            raise ValueError("features and predictions must have the same length")
        pred = _numbers(predictions)
        usable = np.isfinite(pred)
        rows = int(usable.sum())
        errors = self.sampling_errors(rows)
        if not rows:
            return 0, dict.fromkeys(ESTIMATED_LOSSES), errors
        scored = rows
        if rows > max_rows:
            # Seeded by the size: a rerun of the same window scores the same rows.
            picked = np.random.default_rng(rows).choice(np.flatnonzero(usable), max_rows,
                                                        replace=False)
            picked.sort()
            usable = np.zeros(len(pred), dtype=bool)
            usable[picked] = True
            scored = max_rows
        if not usable.all():
            features, pred = features.iloc[usable], pred[usable]
        (mae, rmse), (abs_spread, sq_spread) = self._estimates(self._matrix(features, pred))
        if scored < rows:
            share = math.sqrt((1 - scored / rows) / scored)
            mae_error, rmse_error = errors["mae"], errors["rmse"]
            assert mae_error is not None
            errors["mae"] = math.hypot(mae_error, abs_spread * share)
            if rmse_error is not None and rmse > 0:  # delta method: d sqrt(m) = dm / 2 sqrt(m)
                errors["rmse"] = math.hypot(rmse_error, sq_spread * share / (2 * rmse))
        return rows, {"mae": mae, "rmse": rmse}, errors

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted estimator as JSON-ready figures and named arrays, for storing
        (``from_parts`` gives it back). The two fitted models are pickled (their trees are
        scikit-learn's private structures): safe to load because these bytes only ever
        come from mqm's own store, written by mqm (``monitor.store.profiles``), under a
        key that names the scikit-learn version that pickled them."""
        meta = {
            "inputs": list(self.inputs), "kinds": list(self.kinds),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "reference_mae": self.reference_mae, "reference_rmse": self.reference_rmse,
            "reference_estimated_mae": self.reference_estimated_mae,
            "reference_estimated_rmse": self.reference_estimated_rmse,
            "reference_rows": self.reference_rows,
            "absolute_spread": self.absolute_spread, "squared_spread": self.squared_spread,
        }
        arrays = {name: np.frombuffer(pickle.dumps(model, protocol=5), dtype=np.uint8)
                  for name, model in (("absolute", self.absolute), ("squared", self.squared))}
        return meta, arrays

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]
                   ) -> LossEstimator:
        return cls(
            inputs=tuple(meta["inputs"]), kinds=tuple(meta["kinds"]),
            categories={k: tuple(v) for k, v in meta["categories"].items()},
            absolute=pickle.loads(arrays["absolute"].tobytes()),  # ours: see to_parts
            squared=pickle.loads(arrays["squared"].tobytes()),
            reference_mae=meta["reference_mae"], reference_rmse=meta["reference_rmse"],
            reference_estimated_mae=meta["reference_estimated_mae"],
            reference_estimated_rmse=meta["reference_estimated_rmse"],
            reference_rows=meta["reference_rows"],
            absolute_spread=meta["absolute_spread"], squared_spread=meta["squared_spread"],
        )


def check_estimated_loss(
    estimator: LossEstimator | None,
    features: pd.DataFrame,
    predictions: pd.Series,
    *,
    realized_mae: float | None,
    config: PerformanceConfig,
    unavailable: str | None = None,
) -> EstimatedLossResult:
    """Estimate a window's MAE and RMSE without labels and judge the MAE's rise; pure.

    ``features``: the window's inputs, aligned with ``predictions``; ``realized_mae`` is
    only carried along, to be shown beside the estimate; ``unavailable`` says why there is
    no estimator, when there is none.
    """
    reference = estimator.reference_mae if estimator is not None else None
    ref_metrics: dict[str, float | None] = (
        {} if estimator is None else {"mae": estimator.reference_mae,
                                      "rmse": estimator.reference_rmse})

    def skipped(reason: str) -> EstimatedLossResult:
        return EstimatedLossResult(None, reference, None, realized_mae, 0, "skipped",
                                   (reason,), reference_metrics=ref_metrics)

    if estimator is None:
        return skipped(unavailable or "no loss estimator (the reference has no labels)")
    rows, metrics, errors = estimator.estimate(features, predictions)
    if not rows:
        return skipped("no row of the window has a numeric prediction")
    estimated = metrics["mae"]
    assert estimated is not None  # defined whenever a row is
    bands = {name: loss_band(metrics[name], errors[name]) for name in ESTIMATED_LOSSES}
    lower, upper = bands["mae"]
    ref = estimator.reference_mae
    rise = (estimated - ref) / ref if ref > 0 else (0.0 if estimated <= 0 else math.inf)
    allowed = config.allowed_estimated_rise
    warn = False
    reasons: tuple[str, ...] = ()
    if rise > allowed:
        said = (f"estimated mae {estimated:.4g} vs reference {ref:.4g}: worse by {rise:.1%} "
                f"> allowed {allowed:.1%}")
        where = f"the {BAND_SIGMAS:g}-sigma band {lower:.4g}..{upper:.4g} of {rows} rows"
        if not config.estimated_band:
            warn, reasons = True, (said,)
        elif lower is not None and ref < lower:
            warn, reasons = True, (f"{said}; the reference lies below {where}",)
        else:  # kept in the document: the rise is within what chance gives this many rows
            reasons = (f"{said}, within sampling error: the reference lies in {where}",)
    return EstimatedLossResult(
        estimated, ref, rise, realized_mae, rows, "warn" if warn else "ok", reasons,
        sampling_error=errors["mae"], lower_bound=lower, upper_bound=upper, metrics=metrics,
        sampling_errors=errors, lower_bounds={k: b[0] for k, b in bands.items()},
        upper_bounds={k: b[1] for k, b in bands.items()}, reference_metrics=ref_metrics,
    )
