"""What the checks need from a model's reference set, computed once per reference version.

Loading the file, profiling it for drift, its realized metrics, the calibration of the
accuracy estimator (whether to calibrate each class, decided as NannyML's CBPE, then the
fit, which needs scikit-learn) and a regressor's loss models (DLE) cost seconds; windows
come every few minutes. So the result is built once per key (the file's content hash, the
contract, the calibration rule ``performance.estimated_calibration`` and the profile's
format; a regressor's also the scikit-learn version), stored in the
store (``monitor.store.profiles``) and kept in memory: a later check, in this process or
another, reads the stored profile instead of the file, and fits nothing. A changed file
has another content hash, so its profile is built anew.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from monitor.errors import MonitorError
from monitor.run.reference_file import read_reference
from monitor.schema import ModelSchema

if TYPE_CHECKING:
    import pandas as pd

    from monitor.checks.drift import ReferenceProfile
    from monitor.checks.estimated import AccuracyEstimator
    from monitor.checks.estimated_loss import LossEstimator
    from monitor.checks.multivariate import MultivariateReference
    from monitor.config import ModelConfig
    from monitor.store.db import Engine

__all__ = ["ReferenceData", "decode_profile", "drift_columns", "encode_profile",
           "load_reference_data", "loss_inputs", "profile_key"]

_log = logging.getLogger("mqm.reference")

_CACHE: dict[str, ReferenceData] = {}
_CACHE_SIZE = 16
# Part of every profile's key: raise it whenever what a profile holds, or how it is built
# from the reference, changes, so that profiles stored by an older mqm are built again.
PROFILE_FORMAT = 2  # 2: regressors' profiles hold the loss estimator (DLE)


@dataclass(frozen=True)
class ReferenceData:
    version: str
    rows: int
    drift_profile: ReferenceProfile
    metrics: dict[str, float | None]
    estimator: AccuracyEstimator | None
    estimator_error: str | None
    # Regressors: the loss models of the estimated MAE and RMSE (estimator_error says why
    # there are none).
    loss_estimator: LossEstimator | None = None
    # A row sample for the multivariate check; None unless multivariate.enabled.
    multivariate: MultivariateReference | None = None


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


def loss_inputs(schema: ModelSchema) -> dict[str, Literal["num", "cat"]]:
    """The inputs the loss estimate (DLE) reads beside the prediction: the features the
    drift check tests (datetimes left out)."""
    pred = schema.prediction_column
    return {name: kind for name, kind in drift_columns(schema).items() if name != pred}


def reference_probabilities(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame | None:
    cols = schema.prediction.probability_columns if schema.prediction else {}
    if not cols or any(c not in frame.columns for c in cols.values()):
        return None
    import pandas as pd

    return pd.DataFrame({cls: frame[col].astype(float) for cls, col in cols.items()})


def profile_key(model_cfg: ModelConfig, schema: ModelSchema, version: str) -> str:
    """What a reference profile depends on, hashed: the file's content hash, the contract,
    the calibration rule and the profile's format (a regressor's: and the scikit-learn
    version; with multivariate.enabled: its sample size)."""
    parts: list[Any] = [PROFILE_FORMAT, version, schema.model_dump_json(),
                        model_cfg.performance.estimated_calibration]
    if schema.task == "regression":
        # The loss models are pickled scikit-learn objects: a profile pickled by another
        # scikit-learn version is never unpickled, but built again.
        from importlib.metadata import version as installed

        parts.append(f"scikit-learn {installed('scikit-learn')}")
    if model_cfg.multivariate.enabled:  # off: the key (and profile) of before
        parts.append(["multivariate", model_cfg.multivariate.sample_rows])
    payload = json.dumps(parts)
    return hashlib.sha256(payload.encode()).hexdigest()


def encode_profile(data: ReferenceData) -> bytes:
    """The profile as bytes: an uncompressed ``.npz`` of its arrays, with its figures as
    JSON in the array ``meta``; read back without numpy's pickle (``decode_profile``). A
    regressor's loss models are pickled bytes in their own arrays (``LossEstimator``)."""
    import numpy as np

    drift_meta, drift_arrays = data.drift_profile.to_parts()
    arrays = {f"drift/{k}": v for k, v in drift_arrays.items()}
    estimator = None
    if data.estimator is not None:
        estimator, est_arrays = data.estimator.to_parts()
        arrays |= {f"estimator/{k}": v for k, v in est_arrays.items()}
    loss = None
    if data.loss_estimator is not None:
        loss, loss_arrays = data.loss_estimator.to_parts()
        arrays |= {f"loss/{k}": v for k, v in loss_arrays.items()}
    multivariate = None
    if data.multivariate is not None:
        multivariate, mv_arrays = data.multivariate.to_parts()
        arrays |= {f"multivariate/{k}": v for k, v in mv_arrays.items()}
    meta = {"version": data.version, "rows": data.rows, "drift": drift_meta,
            "metrics": data.metrics, "estimator": estimator,
            "estimator_error": data.estimator_error, "loss_estimator": loss,
            "multivariate": multivariate}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def decode_profile(blob: bytes) -> ReferenceData:
    """``encode_profile`` backwards; ``ValueError`` on bytes it did not write."""
    try:
        return _decode(blob)
    except Exception as exc:  # torn or foreign bytes: whatever numpy, zip or json raise
        raise ValueError(f"not a reference profile: {type(exc).__name__}: {exc}") from None


def _decode(blob: bytes) -> ReferenceData:
    import numpy as np

    from monitor.checks.drift import ReferenceProfile
    from monitor.checks.estimated import AccuracyEstimator
    from monitor.checks.multivariate import MultivariateReference

    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta: dict[str, Any] = json.loads(arrays.pop("meta").tobytes())

    def part(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    estimator = (None if meta["estimator"] is None else
                 AccuracyEstimator.from_parts(meta["estimator"], part("estimator/")))
    loss = None
    if meta.get("loss_estimator") is not None:
        from monitor.checks.estimated_loss import LossEstimator

        loss = LossEstimator.from_parts(meta["loss_estimator"], part("loss/"))
    multivariate = (None if meta.get("multivariate") is None else
                    MultivariateReference.from_parts(meta["multivariate"],
                                                     part("multivariate/")))
    return ReferenceData(
        version=meta["version"], rows=meta["rows"],
        drift_profile=ReferenceProfile.from_parts(meta["drift"], part("drift/")),
        metrics=meta["metrics"], estimator=estimator,
        estimator_error=meta["estimator_error"], loss_estimator=loss,
        multivariate=multivariate)


def _stored(engine: Engine, key: str) -> tuple[ReferenceData | None, bool]:
    """The stored profile, and whether a row is there (one that cannot be read is
    replaced once built again)."""
    from monitor.store.profiles import load_profile

    blob = load_profile(engine, key)
    if blob is None:
        return None, False
    try:
        return decode_profile(blob), True
    except ValueError as exc:
        _log.warning("mqm: the stored reference profile %s cannot be read (%s); building "
                     "it again from the reference set", key[:12], exc)
        return None, True


def load_reference_data(
    model_cfg: ModelConfig, schema: ModelSchema, version: str, *,
    engine: Engine | None = None,
) -> ReferenceData:
    """Reference figures for the checks, by ``profile_key``: from this process's memory,
    else from the store (with ``engine``), else built from the file and stored."""
    key = profile_key(model_cfg, schema, version)
    data = _CACHE.get(key)
    unreadable = False
    if data is None and engine is not None:
        data, unreadable = _stored(engine, key)
    if data is None:
        data = _build(model_cfg, schema, version)
        if engine is not None:
            from monitor.store.profiles import save_profile

            try:
                save_profile(engine, key, reference_version=version,
                             data=encode_profile(data), replace=unreadable)
            except Exception as exc:  # only a cache: the check goes on with what it built
                _log.warning("mqm: storing the reference profile of %s failed: %s: %s",
                             model_cfg.reference, type(exc).__name__, exc)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:  # bounded: the oldest entry goes first
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = data
    return data


def _build(model_cfg: ModelConfig, schema: ModelSchema, version: str) -> ReferenceData:
    """Read the reference file, profile it and fit the estimator."""
    from monitor.checks.drift import ReferenceProfile
    from monitor.checks.estimated import AccuracyEstimator
    from monitor.checks.estimated_loss import LossEstimator
    from monitor.checks.performance import performance_metrics

    calibration = model_cfg.performance.estimated_calibration
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
    loss_estimator = None
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
        elif schema.task == "regression":
            # The two loss models are fitted here, once per reference version (seconds on
            # 100k rows: bench/estimate_loss.py), and stored with the profile.
            try:
                loss_estimator = LossEstimator.fit(frame, loss_inputs(schema), labels, preds)
            except MonitorError as exc:
                estimator_error = f"{path}: {exc}"
        else:
            estimator_error = "the model logs no class probabilities"
    return ReferenceData(
        version=version, rows=len(frame), drift_profile=profile, metrics=metrics,
        estimator=estimator, estimator_error=estimator_error, loss_estimator=loss_estimator,
        multivariate=_multivariate_reference(model_cfg, schema, frame, version),
    )


def _multivariate_reference(model_cfg: ModelConfig, schema: ModelSchema, frame: pd.DataFrame,
                            version: str) -> MultivariateReference | None:
    """The reference's row sample for the multivariate check, when it is enabled: the
    contract's features (not the prediction, a function of them)."""
    if not model_cfg.multivariate.enabled:
        return None
    from monitor.checks.multivariate import MultivariateReference, reference_seed

    pred = schema.prediction_column
    kinds = {c: k for c, k in drift_columns(schema).items() if c != pred}
    return MultivariateReference.build(frame, kinds,
                                       sample_rows=model_cfg.multivariate.sample_rows,
                                       seed=reference_seed(version))
