"""What the checks need from a model's reference set, computed once per reference version.

Loading the file, profiling it for drift, its realized metrics and the calibration
of the accuracy estimator (whether to calibrate each class, decided as NannyML's CBPE,
then the fit) cost seconds; windows come every few minutes. So the
result is cached by the file's content hash, the contract and the calibration rule
(``performance.estimated_calibration``), and rebuilt only when one changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from monitor.errors import MonitorError
from monitor.run.reference_file import read_reference
from monitor.schema import ModelSchema

if TYPE_CHECKING:
    import pandas as pd

    from monitor.checks.drift import ReferenceProfile
    from monitor.checks.estimated import AccuracyEstimator
    from monitor.config import ModelConfig

__all__ = ["ReferenceData", "drift_columns", "load_reference_data"]

_CACHE: dict[tuple[str, str, str, str], ReferenceData] = {}
_CACHE_SIZE = 16


@dataclass(frozen=True)
class ReferenceData:
    version: str
    rows: int
    drift_profile: ReferenceProfile
    metrics: dict[str, float | None]
    estimator: AccuracyEstimator | None
    estimator_error: str | None


def drift_columns(schema: ModelSchema) -> dict[str, Literal["num", "cat"]]:
    """Columns tested for drift: every feature but datetimes, and the prediction (a
    features-only model has none)."""
    kinds: dict[str, Literal["num", "cat"]] = {}
    for spec in schema.features:
        if spec.type in ("int", "float"):
            kinds[spec.name] = "num"
        elif spec.type in ("category", "bool", "string"):
            kinds[spec.name] = "cat"
    pred = schema.prediction
    if pred is not None:
        kinds[pred.column] = "cat" if schema.task == "classification" else "num"
    return kinds


def reference_probabilities(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame | None:
    cols = schema.prediction.probability_columns if schema.prediction else {}
    if not cols or any(c not in frame.columns for c in cols.values()):
        return None
    import pandas as pd

    return pd.DataFrame({cls: frame[col].astype(float) for cls, col in cols.items()})


def load_reference_data(
    model_cfg: ModelConfig, schema: ModelSchema, version: str
) -> ReferenceData:
    """Reference figures for the checks, cached by file hash, contract and calibration rule."""
    calibration = model_cfg.performance.estimated_calibration
    key = (str(model_cfg.reference), version, schema.model_dump_json(), calibration)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    from monitor.checks.drift import ReferenceProfile
    from monitor.checks.estimated import AccuracyEstimator
    from monitor.checks.performance import performance_metrics

    frame = read_reference(model_cfg.reference)
    path = model_cfg.reference
    kinds = drift_columns(schema)
    absent = [c for c in kinds if c not in frame.columns]
    if absent:
        raise MonitorError(f"{path}: reference set lacks column(s) {', '.join(absent)}")
    profile = ReferenceProfile.build(frame[list(kinds)], kinds)
    probs = reference_probabilities(frame, schema)
    metrics: dict[str, float | None] = {}
    estimator = None
    estimator_error = None
    target = schema.target.column if schema.target else None
    if schema.prediction is None:
        estimator_error = "the contract declares no prediction (task: features)"
    elif target is None or target not in frame.columns:
        estimator_error = f"{path}: no target column, so no reference accuracy"
    else:
        preds = frame[schema.prediction.column]
        labels = frame[target]
        metrics = performance_metrics(preds, labels, probs, schema)
        if schema.task == "classification" and probs is not None:
            # Calibration is decided here, once per reference version (ten isotonic fits
            # per class), and kept in the estimator with why (``calibration_notes``).
            try:
                estimator = AccuracyEstimator.fit(probs, labels, preds, schema,
                                                  calibration=calibration)
            except MonitorError as exc:  # the other checks still have their reference
                estimator_error = f"{path}: {exc}"
        else:
            estimator_error = "the model logs no class probabilities"
    data = ReferenceData(
        version=version, rows=len(frame), drift_profile=profile, metrics=metrics,
        estimator=estimator, estimator_error=estimator_error,
    )
    if len(_CACHE) >= _CACHE_SIZE:  # bounded: the oldest entry goes first
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = data
    return data
