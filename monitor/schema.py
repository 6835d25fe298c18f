"""Model contracts (``schemas/<model>.yaml``): loading, value typing, drafting from data.

A contract lists the features a model receives (type, nullability, range,
allowed values), its prediction and its target. The schema check
(``monitor.checks.schema_check``) measures a window of logs against it.
"""

from __future__ import annotations

import math
import numbers
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.errors import SchemaError
from monitor.text_codes import TextCodes
from monitor.yamlfile import load_yaml_model

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FeatureSpec",
    "FeatureType",
    "ModelSchema",
    "PredictionSpec",
    "TargetSpec",
    "guess_prediction",
    "infer_schema",
    "int_label_codes",
    "is_of_type",
    "label_of",
    "label_text",
    "load_schema",
    "parse_text",
    "schema_to_yaml",
]

FeatureType = Literal["int", "float", "bool", "string", "category", "datetime"]
Scalar = int | float | str | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    name: str = Field(min_length=1, description="Column name as logged.")
    type: FeatureType = Field(description="int, float, bool, string, category or datetime.")
    nullable: bool = Field(True, description="Whether null (missing) values are allowed.")
    min: float | None = Field(None, description="Smallest valid value (int/float).")
    max: float | None = Field(None, description="Largest valid value (int/float).")
    allowed: list[Scalar] | None = Field(
        None, description="Known values of a category; others count as unseen."
    )
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        numeric = self.type in ("int", "float")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to int and float features, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.allowed is not None and self.type not in ("category", "string", "int"):
            raise ValueError(f"allowed values apply to category, string or int, not {self.type}")
        return self


class PredictionSpec(_Strict):
    column: str = Field("prediction", description="Column holding the prediction.")
    type: FeatureType = Field(description="Type of the prediction.")
    classes: list[Scalar] | None = Field(None, description="Class labels of a classifier.")
    min: float | None = None
    max: float | None = None
    probability_columns: dict[str, str] = Field(
        default_factory=dict, description="Class label (as text) -> column with its probability."
    )

    @field_validator("probability_columns", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        # YAML reads `1: proba_1` with an int key; class labels are compared as text.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value


class TargetSpec(_Strict):
    column: str = Field(description="Column holding the ground-truth label.")
    type: FeatureType = Field(description="Type of the label.")


Task = Literal["classification", "regression", "features"]


class ModelSchema(_Strict):
    """A model's contract. ``task: features`` declares a model monitored on its inputs
    alone (its predictions are not logged, or logged elsewhere): no ``prediction``, no
    ``target``; schema, drift and service checks run, performance does not apply."""

    model: str = Field(min_length=1, description="Model name, as used in the config.")
    task: Task = "classification"
    features: list[FeatureSpec] = Field(min_length=1)
    prediction: PredictionSpec | None = None
    target: TargetSpec | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSchema:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names are not unique: {', '.join(dupes)}")
        if self.task == "features":
            # Said outright rather than ignored: a contract that names a prediction or a
            # target expects them to be judged.
            if self.prediction is not None or self.target is not None:
                given = " and ".join(k for k in ("prediction", "target")
                                     if getattr(self, k) is not None)
                raise ValueError(f"task: features monitors the inputs alone, so the contract "
                                 f"has no {given}; remove it, or declare task: "
                                 "classification or regression")
            return self
        if self.prediction is None:
            raise ValueError(f"prediction is required for task: {self.task} (a model "
                             "monitored on its inputs alone declares task: features)")
        if self.task == "classification" and self.prediction.probability_columns:
            cols = set(self.prediction.probability_columns.values())
            clash = cols & set(names)
            if clash:
                raise ValueError(f"probability columns clash with features: {sorted(clash)}")
        return self

    @property
    def features_only(self) -> bool:
        """No prediction (``task: features``): performance does not apply."""
        return self.prediction is None

    @property
    def prediction_column(self) -> str | None:
        return None if self.prediction is None else self.prediction.column

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)


_PARSED: dict[str, tuple[tuple[int, int], ModelSchema]] = {}


def load_schema(path: str | Path) -> ModelSchema:
    """Load a contract; raise ``SchemaError`` naming the file and key path.

    Parsed once per process until the file changes (size or modification time): a
    contract is read at every run and every scrape, and ``ModelSchema`` is frozen.
    """
    path = Path(path)
    try:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    cached = _PARSED.get(str(path))
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    schema = load_yaml_model(path, ModelSchema, SchemaError)
    if key is not None:
        _PARSED[str(path)] = (key, schema)
    return schema


# --- value typing -----------------------------------------------------------------
# Values are kept as received (JSON types); these rules decide whether one fits its
# declared type. A float with an integral value (3.0) counts as an int, because
# pandas turns an int column with nulls into floats on its way through CSV.


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_of_type(value: Any, ftype: str) -> bool:
    """Whether a non-null value received over JSON fits the declared type.

    numpy scalars count as their Python kinds (a user's own table may yield them).
    """
    is_bool = isinstance(value, bool | np.bool_)
    is_int = isinstance(value, numbers.Integral) and not is_bool
    is_float = isinstance(value, numbers.Real) and not is_int and not is_bool
    if ftype == "float":
        return is_int or is_float
    if ftype == "int":
        return is_int or (is_float and float(value).is_integer())
    if ftype == "bool":
        return is_bool
    if ftype == "string":
        return isinstance(value, str)
    if ftype == "category":
        return isinstance(value, str) or is_int or is_bool
    if ftype == "datetime":
        if not isinstance(value, str):
            return False
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    raise ValueError(f"unknown type {ftype!r}")


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def parse_text(text: str, ftype: str) -> Any:
    """Read a value that arrived as text (CSV) as its declared type when it fits.

    Text that does not fit stays text, so the schema check sees the mismatch
    instead of the value being coerced away.
    """
    stripped = text.strip()
    if ftype in ("int", "float"):
        try:
            number = int(stripped) if ftype == "int" else float(stripped)
        except ValueError:
            if ftype == "int":
                try:
                    return float(stripped)  # 3.5 in an int column: keep it as a float
                except ValueError:
                    return text
            return text
        return number
    if ftype == "bool":
        low = stripped.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return text
    return text


def label_of(value: Any) -> str:
    """A value as a class or category label (text), the one rule every check shares.

    An integral float reads as an int (1.0 -> "1": an int column with nulls turns
    float in pandas), a bool as "True"/"False", anything else as ``str(value)``.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "True" if value else "False"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        number = float(value)
        if number.is_integer():
            return str(int(number))
    return str(value)


def _small_int_range(values: np.ndarray) -> bool:
    """Non-empty ints (int64, or Python ints in an object array) within int64 that span
    fewer than 2**16."""
    if not len(values) or values.dtype not in (np.int64, object):
        return False
    low, high = values.min(), values.max()
    if values.dtype == object and not (type(low) is int and type(high) is int):
        return False
    return bool(int(low) >= -2**63 and int(high) < 2**63 and int(high) - int(low) < 2**16)


def _int_texts(ints: np.ndarray) -> np.ndarray:
    """Each int64 as ``label_of``'s text: its offset from the smallest picks the text,
    without factorize's hash table sized by the rows (32 MB per million)."""
    low = ints.min()
    offsets = ints - low
    present = np.flatnonzero(np.bincount(offsets))
    table = np.full(int(present[-1]) + 1, None, dtype=object)
    table[present] = [label_of(u) for u in (present + low).astype(np.int64)]
    out: np.ndarray = table[offsets]
    return out


def int_label_codes(values: np.ndarray, has: np.ndarray) -> TextCodes | None:
    """``label_text`` of int64 labels where ``has`` (null elsewhere, whatever ``values``
    holds there) as codes into their distinct texts (in the ints' order), when they span
    fewer than 2**16; else None. A few passes over the rows, no copy of the ints."""
    if not has.any():
        return TextCodes(np.full(len(values), -1, dtype=np.int8), np.array([], dtype=object))
    # The range of every slot when it is short (the others hold a filler, 0: a plain
    # min and max are a quarter of the masked ones' time), else of the labels' alone.
    low, high = int(values.min()), int(values.max())
    if high - low >= 2**16:
        low = int(np.min(values, where=has, initial=np.iinfo(np.int64).max))
        high = int(np.max(values, where=has, initial=np.iinfo(np.int64).min))
        if high - low >= 2**16:
            return None
    null_slot = high - low + 1  # where the rows without a label point
    offsets = np.where(has, np.subtract(values, low), null_slot)
    present = np.flatnonzero(np.bincount(offsets, minlength=null_slot + 1)[:null_slot])
    # The smallest signed type that holds every code and -1.
    small = np.min_scalar_type(-len(present))
    remap = np.full(null_slot + 1, -1, dtype=small)
    remap[present] = np.arange(len(present), dtype=small)
    words = np.array([label_of(u) for u in (present + low).astype(np.int64)], dtype=object)
    return TextCodes(remap[offsets], words)


def label_text(values: pd.Series) -> pd.Series:
    """``label_of`` over a series (object dtype), None where missing."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_object_dtype(values.dtype):
        # One C pass over the values: texts only, not one null among them (the common
        # case) need no change, and no pass to find the nulls.
        if pd.api.types.infer_dtype(values, skipna=False) == "string":
            return values.copy(deep=False)
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind in ("string", "empty"):
            return values.where(values.notna(), None).astype(object)
        if kind == "integer":  # ints only: factorizing merges nothing, and is C
            null = values.isna().to_numpy()
            raw = values.to_numpy()
            ints = raw[~null] if null.any() else raw
            if _small_int_range(ints):
                text = np.full(len(values), None, dtype=object)
                text[~null] = _int_texts(ints.astype(np.int64))
                return pd.Series(text, index=values.index, dtype=object)
            codes, uniques = pd.factorize(values)
            text = np.array([label_of(u) for u in uniques] + [None], dtype=object)[codes]
        else:
            # Mixed: per value, since factorizing would merge 1, 1.0 and True (equal
            # hashes).
            text = np.array([label_of(v) for v in values], dtype=object)
    elif _small_int_range(values.to_numpy()):
        text = _int_texts(values.to_numpy())
    else:
        # Typed columns hold few distinct labels: convert those, not every row.
        codes, uniques = pd.factorize(values)
        text = np.array([label_of(u) for u in uniques] + [None], dtype=object)[codes]
    text[values.isna().to_numpy()] = None
    return pd.Series(text, index=values.index, dtype=object)


# --- drafting a schema from a reference set ----------------------------------------

_CATEGORY_MAX_VALUES = 50


_PREDICTION_NAMES = ("prediction", "yhat", "y_hat")


def guess_prediction(columns: list[str], *, exclude: set[str]) -> str:
    """The prediction column of a reference set whose columns are ``columns``: the one
    named ``prediction``, else the only one whose name says so (holds ``pred``, or is
    ``yhat``). ``SchemaError`` listing the candidates (or the columns) otherwise."""
    if "prediction" in columns:
        return "prediction"
    candidates = [c for c in columns if c not in exclude and (
        "pred" in c.lower() or c.lower() in _PREDICTION_NAMES)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise SchemaError(f"which column holds the prediction? candidates: "
                          f"{', '.join(candidates)}; name one with --prediction")
    raise SchemaError("no column looks like the prediction (none is named 'prediction' or "
                      "holds 'pred'); the reference set needs the model's predictions: name "
                      "their column with --prediction (or, to monitor the inputs alone, "
                      f"--no-prediction); columns: {_listed(columns)}")


def _listed(columns: list[str], limit: int = 30) -> str:
    more = f", ... ({len(columns) - limit} more)" if len(columns) > limit else ""
    return ", ".join(columns[:limit]) + more


def infer_schema(
    frame: pd.DataFrame,
    *,
    model: str,
    prediction: str | None = None,
    target: str | None = None,
    probability_prefix: str = "proba_",
    ignore: tuple[str, ...] = ("request_id", "timestamp", "model_version"),
    features_only: bool = False,
) -> tuple[ModelSchema, dict[str, tuple[Any, Any]]]:
    """Draft a contract from a reference frame.

    ``prediction``: the column holding the model's prediction; None guesses it
    (``guess_prediction``). ``features_only``: a contract without prediction or target
    (``task: features``), every column but the ids a feature; nothing is guessed.
    Returns the schema and, per numeric feature, the observed (min, max), which the
    caller shows as a hint: the observed range is rarely the valid domain, so it is not
    written as a limit.
    """
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    if features_only and (prediction is not None or target is not None):
        raise SchemaError("a features-only contract has no prediction and no target; "
                          "leave out --prediction and --target")
    if target is not None and target not in frame.columns:
        raise SchemaError(f"target column {target!r} is not in the data; columns: "
                          f"{_listed(columns)}")
    if features_only:
        return _features_only(frame, model, ignore)
    proba_cols = [c for c in frame.columns if str(c).startswith(probability_prefix)]
    if prediction is None:
        prediction = guess_prediction(columns, exclude={*map(str, proba_cols), *ignore,
                                                        *([target] if target else [])})
    elif prediction not in frame.columns:
        raise SchemaError(f"prediction column {prediction!r} is not in the data; columns: "
                          f"{_listed(columns)}")
    skip = {prediction, *proba_cols, *ignore}
    if target:
        skip.add(target)
    features, ranges = _draft_features(frame, skip)
    if not features:
        raise SchemaError("no feature columns left after removing prediction, target and ids")

    pred_series = frame[prediction]
    pred_type = _column_type(pred_series)
    classes = None
    if target is not None or proba_cols:
        classes = sorted(pd.concat([pred_series, frame[target]] if target else [pred_series])
                         .dropna().unique().tolist(), key=str)
    task: Literal["classification", "regression"] = (
        "regression" if pred_type == "float" and not proba_cols else "classification"
    )
    if task == "regression":
        classes = None
    schema = ModelSchema(
        model=model,
        task=task,
        features=features,
        prediction=PredictionSpec(
            column=prediction,
            type=pred_type,
            classes=classes,
            probability_columns={c[len(probability_prefix):]: c for c in proba_cols},
        ),
        target=TargetSpec(column=target, type=_column_type(frame[target])) if target else None,
    )
    return schema, ranges


def _features_only(frame: pd.DataFrame, model: str, ignore: tuple[str, ...]
                   ) -> tuple[ModelSchema, dict[str, tuple[Any, Any]]]:
    features, ranges = _draft_features(frame, set(ignore))
    if not features:
        raise SchemaError("no feature columns left after removing the ids")
    return ModelSchema(model=model, task="features", features=features), ranges


def _column_type(series: pd.Series) -> FeatureType:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    values = series.dropna()
    if len(values) and values.map(type).eq(bool).all():
        return "bool"
    uniques = values.nunique()
    if uniques <= _CATEGORY_MAX_VALUES and uniques <= max(2, 0.05 * len(values)):
        return "category"
    return "string"


def _draft_features(frame: pd.DataFrame, skip: set[Any]
                    ) -> tuple[list[FeatureSpec], dict[str, tuple[Any, Any]]]:
    """A feature per column not in ``skip``, and the observed range of the numeric ones."""
    features = []
    ranges: dict[str, tuple[Any, Any]] = {}
    for name in frame.columns:
        if name in skip:
            continue
        series = frame[name]
        ftype = _column_type(series)
        allowed = None
        if ftype == "category":
            allowed = sorted(series.dropna().unique().tolist(), key=str)
        if ftype in ("int", "float") and series.notna().any():
            ranges[str(name)] = (series.min().item(), series.max().item())
        features.append(
            FeatureSpec(
                name=str(name), type=ftype, nullable=bool(series.isna().any()), allowed=allowed
            )
        )
    return features, ranges


def schema_to_yaml(schema: ModelSchema, ranges: dict[str, tuple[Any, Any]] | None = None) -> str:
    """Render a contract as YAML, with observed ranges as comments to edit into limits."""
    import yaml

    data = schema.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    for feat in data["features"]:
        feat.pop("description", None)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if not ranges:
        return text
    out = []
    for line in text.splitlines():
        out.append(line)
        stripped = line.strip()
        if stripped.startswith("- name: "):
            name = stripped[len("- name: "):].strip("'\"")
            if name in ranges:
                low, high = ranges[name]
                indent = " " * (line.index("-") + 2)
                out.append(f"{indent}# observed in the reference: {low} .. {high}"
                           " (set min/max to the valid domain)")
    return "\n".join(out) + "\n"
