"""What ``mqm config check`` looks at beyond the config file's own validation: each
model's contract, its schedule as ``mqm serve`` reads it, and the columns of its
reference set against the contract. Whatever would make a later command or the service
fail is an error; what only weakens the checks is a warning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monitor.config import Config, ModelConfig
from monitor.errors import MonitorError

__all__ = ["Finding", "check_config"]


@dataclass(frozen=True)
class Finding:
    """One problem of one model; ``message`` names the model and the file or setting."""

    level: Literal["error", "warning"]
    message: str


def check_config(config: Config) -> list[Finding]:
    """Every problem of every model, in the config's order."""
    return [finding for name, model_cfg in config.models.items()
            for finding in _check_model(name, model_cfg)]


def _check_model(name: str, model_cfg: ModelConfig) -> list[Finding]:
    from monitor.run.reference import drift_columns
    from monitor.run.reference_file import reference_columns
    from monitor.schema import load_schema
    from monitor.serve.triggers import trigger_for

    found: list[Finding] = []

    def error(text: str) -> None:
        found.append(Finding("error", f"model {name!r}: {text}"))

    schema = None
    try:
        schema = load_schema(model_cfg.schema_path)
    except MonitorError as exc:
        error(str(exc))
    try:
        trigger_for(name, model_cfg)  # what mqm serve builds; it names the model itself
    except MonitorError as exc:
        found.append(Finding("error", str(exc)))
    if schema is not None:
        try:
            model_cfg.segments.check_columns({f.name: f.type for f in schema.features},
                                             str(model_cfg.schema_path))
        except MonitorError as exc:
            error(str(exc))
    try:
        columns = set(reference_columns(model_cfg.reference))
    except MonitorError as exc:
        error(str(exc))
        return found
    if schema is None:
        return found
    ref = model_cfg.reference
    if schema.prediction is None:
        found += _features_only(name, model_cfg)
        features = [c for c in drift_columns(schema) if c not in columns]
        if features:
            error(f"reference set {ref} lacks feature column(s) {', '.join(features)}")
        return found
    prediction = schema.prediction.column
    features = [c for c in drift_columns(schema) if c != prediction and c not in columns]
    if prediction not in columns:
        error(f"reference set {ref} lacks the prediction column {prediction}")
    if features:
        error(f"reference set {ref} lacks feature column(s) {', '.join(features)}")
    probabilities = [c for c in schema.prediction.probability_columns.values()
                     if c not in columns]
    if probabilities:
        error(f"reference set {ref} lacks probability column(s) {', '.join(probabilities)}")
    if schema.target is not None and schema.target.column not in columns:
        found.append(Finding("warning", f"model {name!r}: reference set {ref} lacks the "
                             f"target column {schema.target.column}: accuracy is measured but "
                             "not compared with the reference"))
    return found


def _features_only(name: str, model_cfg: ModelConfig) -> list[Finding]:
    """Settings that need predictions, given for a features-only model (contract ``task:
    features``). Warnings, not errors: nothing fails, they only have no effect (its runs
    say performance does not apply), and the same monitor.yaml keeps working when the
    contract gains a prediction."""
    given = []
    if "performance" in model_cfg.model_fields_set:
        keys = sorted(model_cfg.performance.model_fields_set)
        given.append("performance" + (f" ({', '.join(keys)})" if keys else ""))
    if "prediction_in_share" in model_cfg.drift.model_fields_set:
        given.append("drift.prediction_in_share")
    mapping = model_cfg.source.columns
    given += [f"source.columns.{key}" for key in ("prediction", "probabilities")
              if getattr(mapping, key) is not None]
    if not given:
        return []
    return [Finding("warning", f"model {name!r}: {'; '.join(given)}: no effect, its contract "
                    f"{model_cfg.schema_path} declares no prediction (task: features), so "
                    "performance does not apply and no prediction is read")]
