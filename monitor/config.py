"""Typed config: one YAML file (``monitor.yaml``) plus environment overrides.

Every setting is declared once here, with its type, default and help; the
config reference in the README is generated from these declarations
(``mqm config reference``) and a test keeps the two in step.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.errors import ConfigError, UnknownModelError
from monitor.yamlfile import load_yaml_model

__all__ = [
    "ColumnMapping",
    "Config",
    "ModelConfig",
    "SchemaCheckConfig",
    "SourceConfig",
    "config_path",
    "load_config",
    "parse_duration",
]

DEFAULT_CONFIG = "monitor.yaml"
ENV_CONFIG = "MQM_CONFIG"
ENV_DATABASE_URL = "MQM_DATABASE_URL"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Accept '30m', '6h', '1d', '2w' or a number of seconds; leave other input to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ColumnMapping(_Section):
    """Where a user's own log table keeps each field mqm needs."""

    request_id: str = Field("request_id", description="Column with the request id.")
    timestamp: str = Field("timestamp", description="Column with the inference time (UTC).")
    model_version: str | None = Field(None, description="Column with the model version.")
    prediction: str | None = Field(
        None, description="Column with the prediction (default: the schema's prediction column)."
    )
    latency_ms: str | None = Field(None, description="Column with the latency in milliseconds.")
    error: str | None = Field(None, description="Column with a true/false error flag.")
    error_message: str | None = Field(None, description="Column with the error message.")
    features_json: str | None = Field(
        None, description="Column holding all features as one JSON object, instead of one "
        "column per feature."
    )
    features: dict[str, str] = Field(
        default_factory=dict,
        description="Feature name -> column, where the column is not named as the feature.",
    )
    probabilities: dict[str, str] | None = Field(
        None, description="Class label -> column with its probability (default: the schema's "
        "probability_columns).",
    )

    @field_validator("probabilities", mode="before")
    @classmethod
    def _class_keys_as_text(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class SourceConfig(_Section):
    """Where a model's inference logs are read from."""

    kind: Literal["builtin", "sql"] = Field(
        "builtin", description="builtin: mqm's own inference_logs table; sql: a user's table "
        "or query."
    )
    url: str | None = Field(
        None, description="Database URL of a sql source (default: the monitor's database)."
    )
    table: str | None = Field(None, description="Table of a sql source.")
    query: str | None = Field(
        None, description="SELECT of a sql source (instead of table); it is wrapped as a "
        "subquery and filtered by time."
    )
    columns: ColumnMapping = Field(default_factory=ColumnMapping)

    @model_validator(mode="after")
    def _one_of_table_query(self) -> SourceConfig:
        if self.kind == "sql" and (self.table is None) == (self.query is None):
            raise ValueError("a sql source needs exactly one of table or query")
        if self.kind == "builtin" and (self.table or self.query or self.url):
            raise ValueError("table, query and url belong to a sql source (kind: sql)")
        return self


class SchemaCheckConfig(_Section):
    """Limits of the schema check."""

    warn_violation_rate: float = Field(
        0.01, ge=0, le=1, description="Share of rows with any violation that makes a warning."
    )
    critical_violation_rate: float = Field(
        0.05, ge=0, le=1, description="Share of rows with any violation that makes it critical."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SchemaCheckConfig:
        if self.warn_violation_rate > self.critical_violation_rate:
            raise ValueError("warn_violation_rate must not exceed critical_violation_rate")
        return self


class ModelConfig(_Section):
    """One monitored model."""

    schema_path: Path = Field(
        alias="schema", description="Path of the model's contract (schemas/<model>.yaml)."
    )
    reference: Path = Field(description="Reference set: a CSV or Parquet file with labels.")
    source: SourceConfig = Field(default_factory=SourceConfig)
    version: str | None = Field(
        None, description="Model version to record when the logs carry none."
    )
    window: timedelta = Field(
        timedelta(days=1), description="Length of one check window ('6h', '1d', seconds)."
    )
    min_rows: int = Field(
        100, ge=1, description="Fewer rows than this make a window insufficient_data."
    )
    schema_check: SchemaCheckConfig = Field(default_factory=SchemaCheckConfig)

    @field_validator("window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @field_validator("schema_path", "reference")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return value if value.is_absolute() or base is None else Path(base) / value


class Config(_Section):
    """The whole config file."""

    database_url: str = Field(
        "sqlite:///mqm.db",
        description="SQLAlchemy URL of the store; a relative SQLite path is relative to the "
        f"config file. {ENV_DATABASE_URL} overrides it.",
    )
    models: dict[str, ModelConfig] = Field(description="Monitored models by name.")

    @field_validator("database_url")
    @classmethod
    def _sqlite_relative(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        prefix = "sqlite:///"
        if base and value.startswith(prefix) and not value.startswith(prefix + "/"):
            rest = value[len(prefix):]
            if rest and rest != ":memory:":
                return prefix + str((Path(base) / rest).resolve())
        return value

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name, list(self.models)) from None


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file: ``--config``, else ``MQM_CONFIG``, else ``./monitor.yaml``."""
    return Path(explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config; environment overrides win over the file."""
    file = config_path(path)
    cfg = load_yaml_model(file, Config, ConfigError, base_dir=str(file.resolve().parent))
    url = os.environ.get(ENV_DATABASE_URL)
    if url:
        cfg = cfg.model_copy(update={"database_url": url})
    return cfg
