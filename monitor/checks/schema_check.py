"""Schema check: a window's features and predictions against the model's contract.

Per column it measures the share of rows that are null where nulls are not
allowed, of another type than declared, out of range, or an unseen category;
overall, the share of rows with at least one violation. A feature absent from the
whole window is a missing column; a column the contract does not know is unexpected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.config import SchemaCheckConfig
from monitor.schema import FeatureSpec, ModelSchema, is_of_type

__all__ = ["ColumnReport", "SchemaResult", "check_schema"]

Status = Literal["ok", "warn", "critical", "insufficient_data"]
_EXAMPLES = 3


@dataclass(frozen=True)
class ColumnReport:
    column: str
    role: Literal["feature", "prediction"]
    expected_type: str | None
    state: Literal["present", "missing", "unexpected"]
    null_rate: float = 0.0
    nulls_allowed: bool = True
    type_mismatch_rate: float = 0.0
    out_of_range_rate: float = 0.0
    unseen_category_rate: float = 0.0
    violation_rate: float = 0.0
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaResult:
    rows: int
    status: Status
    violation_rate: float
    violating_rows: int
    columns: tuple[ColumnReport, ...]
    missing_columns: tuple[str, ...]
    unexpected_columns: tuple[str, ...]
    reasons: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def column(self, name: str) -> ColumnReport:
        for col in self.columns:
            if col.column == name:
                return col
        raise KeyError(name)


def _type_ok(values: pd.Series, ftype: str) -> np.ndarray:
    """Boolean mask over non-null ``values``: fits the declared type."""
    dtype = values.dtype
    # Fast paths for columns pandas already typed uniformly.
    if ftype == "float" and (pd.api.types.is_float_dtype(dtype)
                             or pd.api.types.is_integer_dtype(dtype)):
        return np.ones(len(values), dtype=bool)
    if ftype == "int":
        if pd.api.types.is_integer_dtype(dtype):
            return np.ones(len(values), dtype=bool)
        if pd.api.types.is_float_dtype(dtype):
            return (values.to_numpy() % 1 == 0)
    if ftype == "bool" and pd.api.types.is_bool_dtype(dtype):
        return np.ones(len(values), dtype=bool)
    return np.fromiter((is_of_type(v, ftype) for v in values), dtype=bool, count=len(values))


def _label(value: Any) -> str:
    """Category values compared as text; 1.0 (an int column that held nulls) reads as 1."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _examples(values: pd.Series) -> tuple[str, ...]:
    seen: list[str] = []
    for v in values:
        text = repr(v)
        if text not in seen:
            seen.append(text)
        if len(seen) == _EXAMPLES:
            break
    return tuple(seen)


def _measure(
    series: pd.Series, spec: FeatureSpec | None, *, column: str, role: str,
    ftype: str, nullable: bool, low: float | None, high: float | None, allowed: list[Any] | None,
) -> tuple[ColumnReport, np.ndarray]:
    n = len(series)
    null = series.isna().to_numpy()
    present = series[~null]
    type_ok = _type_ok(present, ftype)
    mismatch = np.zeros(n, dtype=bool)
    mismatch[~null] = ~type_ok
    out_of_range = np.zeros(n, dtype=bool)
    unseen = np.zeros(n, dtype=bool)
    typed = present[type_ok]
    examples: list[pd.Series] = [present[~type_ok]]
    idx_present = np.flatnonzero(~null)
    idx_typed = idx_present[type_ok]
    if ftype in ("int", "float") and (low is not None or high is not None) and len(typed):
        nums = pd.to_numeric(typed, errors="coerce").to_numpy(dtype=float)
        bad = np.zeros(len(nums), dtype=bool)
        if low is not None:
            bad |= nums < low
        if high is not None:
            bad |= nums > high
        out_of_range[idx_typed[bad]] = True
        examples.append(typed[bad])
    if allowed is not None and len(typed):
        known = {_label(a) for a in allowed}
        bad = ~typed.map(_label).isin(known).to_numpy()
        unseen[idx_typed[bad]] = True
        examples.append(typed[bad])
    null_violation = null if not nullable else np.zeros(n, dtype=bool)
    violating = null_violation | mismatch | out_of_range | unseen
    def rate(mask):
        return (float(mask.mean()) if n else 0.0)
    report = ColumnReport(
        column=column,
        role=role,  # type: ignore[arg-type]
        expected_type=ftype,
        state="present",
        null_rate=rate(null),
        nulls_allowed=nullable,
        type_mismatch_rate=rate(mismatch),
        out_of_range_rate=rate(out_of_range),
        unseen_category_rate=rate(unseen),
        violation_rate=rate(violating),
        examples=_examples(pd.concat(examples)) if any(len(e) for e in examples) else (),
    )
    return report, violating


def check_schema(
    features: pd.DataFrame,
    predictions: pd.Series | None,
    schema: ModelSchema,
    *,
    config: SchemaCheckConfig,
    min_rows: int = 1,
) -> SchemaResult:
    """Measure one window against the contract; pure, no I/O."""
    n = len(features) if predictions is None else max(len(features), len(predictions))
    reports: list[ColumnReport] = []
    violating = np.zeros(n, dtype=bool)
    missing = []
    for spec in schema.features:
        if spec.name not in features.columns:
            missing.append(spec.name)
            reports.append(ColumnReport(spec.name, "feature", spec.type, "missing",
                                        null_rate=1.0, nulls_allowed=spec.nullable,
                                        violation_rate=1.0 if n else 0.0))
            violating[:] = True
            continue
        rep, bad = _measure(
            features[spec.name].reset_index(drop=True), spec, column=spec.name, role="feature",
            ftype=spec.type, nullable=spec.nullable, low=spec.min, high=spec.max,
            allowed=spec.allowed if spec.type == "category" else None,
        )
        reports.append(rep)
        violating |= bad
    if predictions is not None:
        pred = schema.prediction
        rep, bad = _measure(
            predictions.reset_index(drop=True), None, column=pred.column, role="prediction",
            ftype=pred.type, nullable=True, low=pred.min, high=pred.max, allowed=pred.classes,
        )
        reports.append(rep)
        violating |= bad
    known = set(schema.feature_names)
    unexpected = [c for c in features.columns if c not in known]
    for name in unexpected:
        reports.append(ColumnReport(str(name), "feature", None, "unexpected",
                                    null_rate=float(features[name].isna().mean()) if n else 0.0))
    count = int(violating.sum())
    share = count / n if n else 0.0
    reasons: list[str] = []
    if missing:
        reasons.append(f"missing column(s): {', '.join(missing)}")
    if share >= config.critical_violation_rate and count:
        limit = config.critical_violation_rate
        reasons.append(f"violation rate {share:.2%} >= critical {limit:.2%}")
    elif share >= config.warn_violation_rate and count:
        limit = config.warn_violation_rate
        reasons.append(f"violation rate {share:.2%} >= warn {limit:.2%}")
    if unexpected:
        reasons.append(f"unexpected column(s): {', '.join(map(str, unexpected))}")
    # Worst column first, so the first reason is the one to look at.
    for rep in sorted(reports, key=lambda r: -r.violation_rate):
        if rep.state == "present" and rep.violation_rate > 0:
            parts = [f"{label} {value:.2%}" for label, value in (
                ("nulls", rep.null_rate if not rep.nulls_allowed else 0.0),
                ("type mismatches", rep.type_mismatch_rate),
                ("out of range", rep.out_of_range_rate),
                ("unseen categories", rep.unseen_category_rate)) if value]
            reasons.append(f"{rep.column}: {', '.join(parts)}")
    status: Status
    if n < min_rows:
        status = "insufficient_data"
    elif missing or (count and share >= config.critical_violation_rate):
        status = "critical"
    elif unexpected or (count and share >= config.warn_violation_rate):
        status = "warn"
    else:
        status = "ok"
    return SchemaResult(
        rows=n,
        status=status,
        violation_rate=share,
        violating_rows=count,
        columns=tuple(reports),
        missing_columns=tuple(missing),
        unexpected_columns=tuple(map(str, unexpected)),
        reasons=tuple(reasons),
    )
