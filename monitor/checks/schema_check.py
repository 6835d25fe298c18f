"""Schema check: a window's features and predictions against the model's contract.

Per column it measures the share of rows that are null where nulls are not
allowed, of another type than declared, out of range, or an unseen category;
overall, the share of rows with at least one violation. A feature absent from the
whole window is a missing column; a column the contract does not know is unexpected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.config import SchemaCheckConfig
from monitor.results import ColumnReport, SchemaResult
from monitor.schema import ModelSchema, is_of_type, label_of, label_text
from monitor.text_codes import TextCodes

__all__ = ["ColumnReport", "SchemaAccumulator", "SchemaResult", "check_schema"]

Status = Literal["ok", "warn", "critical", "insufficient_data"]
_EXAMPLES = 3


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
            return _integral(values.to_numpy())
    if ftype == "bool" and pd.api.types.is_bool_dtype(dtype):
        return np.ones(len(values), dtype=bool)
    if pd.api.types.is_object_dtype(dtype) and ftype != "datetime":
        # Object columns of one Python type (the common case) are judged in one C pass;
        # only truly mixed columns go value by value.
        kind = pd.api.types.infer_dtype(values, skipna=False)
        every = np.ones(len(values), dtype=bool)
        if kind == "string":
            return every if ftype in ("string", "category") else ~every
        if kind == "boolean":
            return every if ftype in ("bool", "category") else ~every
        if kind == "integer":
            return every if ftype in ("int", "float", "category") else ~every
        if kind in ("floating", "mixed-integer-float"):
            if ftype == "float":
                return every
            if ftype == "int":
                return _integral(values.to_numpy(dtype=float))
            if kind == "floating" or ftype != "category":
                return ~every
            # A category column with ints and floats: the ints fit; judged by type below.
        return _type_ok_mixed(values, ftype)
    return np.fromiter((is_of_type(v, ftype) for v in values), dtype=bool, count=len(values))


def _integral(floats: np.ndarray) -> np.ndarray:
    """Per float, whether it is a whole number (infinities and NaN are not; quietly)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(floats % 1 == 0, dtype=bool)


def _type_ok_mixed(values: pd.Series, ftype: str) -> np.ndarray:
    """Mixed object columns (a "N/A" among floats): decided on each value's Python type,
    vectorized; only values of other types (numpy scalars, lists) go through is_of_type."""
    raw = values.to_numpy(dtype=object)
    types = values.map(type).to_numpy(dtype=object)
    # Elementwise numpy comparisons of type objects (exact types, not isinstance).
    is_str, is_int, is_float, is_bool = (types == str, types == int,  # noqa: E721
                                         types == float, types == bool)  # noqa: E721
    if ftype == "float":
        ok: np.ndarray = is_int | is_float
    elif ftype == "int":
        ok = is_int.copy()
        floats = raw[is_float].astype(float)
        ok[is_float] = _integral(floats)
    elif ftype == "bool":
        ok = is_bool
    elif ftype == "string":
        ok = is_str
    elif ftype == "category":
        ok = is_str | is_int | is_bool
    else:
        ok = np.zeros(len(raw), dtype=bool)
    other = ~(is_str | is_int | is_float | is_bool)
    if ftype == "datetime":
        other = np.ones(len(raw), dtype=bool)
    if other.any():
        ok[other] = [is_of_type(v, ftype) for v in raw[other]]
    return ok


def _examples(values: pd.Series) -> tuple[str, ...]:
    seen: list[str] = []
    for v in values:
        text = repr(v)
        if text not in seen:
            seen.append(text)
        if len(seen) == _EXAMPLES:
            break
    return tuple(seen)


@dataclass
class _Counts:
    """Running counts of one column, so that a window can be measured chunk by chunk."""

    rows: int = 0
    nulls: int = 0
    mismatches: int = 0
    out_of_range: int = 0
    unseen: int = 0
    violating: int = 0
    seen: bool = False
    examples: list[str] = field(default_factory=list)

    def rate(self, count: int) -> float:
        return count / self.rows if self.rows else 0.0


# Per row and column, which violations it has: bits of one byte, counted per group.
_NULL, _MISMATCH, _RANGE, _UNSEEN, _VIOLATING = 1, 2, 4, 8, 16
_PATTERNS = 32


def _numbered(series: pd.Series) -> pd.Series:
    """``series`` numbered from 0: itself when it is (``reset_index`` copies the values,
    0.03 s for a million rows of twelve columns)."""
    index = series.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return series
    return series.reset_index(drop=True)


def _measure(
    series: pd.Series, counts: _Counts, *, ftype: str, nullable: bool,
    low: float | None, high: float | None, allowed: list[Any] | None,
    bits: list[np.ndarray] | None = None, texts: TextCodes | None = None,
    labels: TextCodes | None = None,
) -> np.ndarray:
    """Add one chunk of a column to ``counts``; return the chunk's violating-row mask.
    ``bits``: receives each row's violations as one byte (``_NULL`` ... ``_VIOLATING``).
    ``texts``: the column as codes into its distinct texts (every row a text or null),
    when the read has them: each distinct text is then judged once. ``labels``: each
    row's ``label_text`` as codes (a classifier's predictions, from the read): each
    distinct label is then looked up in ``allowed`` once."""
    if texts is not None and ftype != "datetime" and (texts.numbers is None or allowed is None):
        return _measure_texts(texts, series, counts, ftype=ftype, nullable=nullable, low=low,
                              high=high, allowed=allowed, bits=bits)
    n = len(series)
    null = series.isna().to_numpy()
    # Masks copy every value (a million objects in a text column): only where they drop one.
    present = series[~null] if null.any() else series
    type_ok = _type_ok(present, ftype)
    mismatch = np.zeros(n, dtype=bool)
    mismatch[~null] = ~type_ok
    out_of_range = np.zeros(n, dtype=bool)
    unseen = np.zeros(n, dtype=bool)
    every_typed = bool(type_ok.all())
    typed = present if every_typed else present[type_ok]
    examples: list[pd.Series] = [] if every_typed else [present[~type_ok]]
    idx_typed = np.flatnonzero(~null)[type_ok]
    if ftype in ("int", "float") and (low is not None or high is not None) and len(typed):
        bad = _out_of_range(typed, low, high)
        out_of_range[idx_typed[bad]] = True
        examples.append(typed[bad])
    if allowed is not None and len(typed):
        if labels is not None and len(labels) == n:
            # Each distinct label judged once (label_text of a text is the text); code -1
            # (no label) picks the appended False.
            verdicts = np.append(_unseen(pd.Series(labels.words, dtype=object), allowed),
                                 False)
            bad = verdicts[labels.codes[idx_typed]]
        else:
            bad = _unseen(typed, allowed)
        unseen[idx_typed[bad]] = True
        examples.append(typed[bad])
    return _count(counts, null, mismatch, out_of_range, unseen, nullable=nullable, bits=bits,
                  examples=lambda: pd.concat(examples) if any(len(e) for e in examples)
                  else None)


def _out_of_range(typed: pd.Series, low: float | None, high: float | None) -> np.ndarray:
    return _outside(pd.to_numeric(typed, errors="coerce").to_numpy(dtype=float), low, high)


def _outside(nums: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """Per number, whether it lies below ``low`` or above ``high`` (NaN: neither)."""
    bad = np.zeros(len(nums), dtype=bool)
    with np.errstate(invalid="ignore"):
        if low is not None:
            bad |= nums < low
        if high is not None:
            bad |= nums > high
    return bad


def _unseen(typed: pd.Series, allowed: list[Any]) -> np.ndarray:
    known = {label_of(a) for a in allowed}
    bad: np.ndarray = ~label_text(typed).isin(known).to_numpy()
    return bad


def _measure_texts(
    texts: TextCodes, series: pd.Series, counts: _Counts, *, ftype: str, nullable: bool,
    low: float | None, high: float | None, allowed: list[Any] | None,
    bits: list[np.ndarray] | None,
) -> np.ndarray:
    """``_measure`` of a column of texts, floats and nulls: texts judged per distinct
    text (each test is elementwise, so a text's verdict is each of its rows'), floats as
    one float64 array, with ``_type_ok_mixed``'s rules (a float fits a float column, an
    integral one an int column, nothing else). Not for datetime columns, nor for floats
    against allowed values."""
    words = pd.Series(texts.words, dtype=object)
    codes = texts.codes
    type_ok = _type_ok(words, ftype) if len(words) else np.zeros(0, dtype=bool)
    out_of_range = np.zeros(len(words), dtype=bool)
    unseen = np.zeros(len(words), dtype=bool)
    typed = words[type_ok]
    bounded = ftype in ("int", "float") and (low is not None or high is not None)
    if bounded and len(typed):
        out_of_range[np.flatnonzero(type_ok)[_out_of_range(typed, low, high)]] = True
    if allowed is not None and len(typed):
        unseen[np.flatnonzero(type_ok)[_unseen(typed, allowed)]] = True

    def per_row(flags: np.ndarray) -> np.ndarray:
        # Code -1 (not a text) picks the appended False.
        return np.append(flags, False)[codes] if flags.any() else np.zeros(len(codes), bool)

    null = texts.null()
    rows_mismatch, rows_range = per_row(~type_ok), per_row(out_of_range)
    numbers = texts.numbers
    if numbers is not None:
        floats = (codes < 0) & ~null
        if ftype == "float":
            fits = floats
        elif ftype == "int":
            fits = floats & _integral(numbers)
        else:
            fits = np.zeros(len(codes), dtype=bool)
        rows_mismatch |= floats & ~fits
        if bounded:
            rows_range |= fits & _outside(numbers, low, high)
    rows_unseen = per_row(unseen)

    def examples() -> pd.Series | None:
        # Mismatches, then values out of range, then unseen ones, each in row order (as
        # ``_measure`` lists them); texts alone by the order of their first row.
        if numbers is not None:
            return pd.concat([series[rows_mismatch], series[rows_range], series[rows_unseen]])
        order = texts.first_seen()
        picked = [order[flags[order]] for flags in (~type_ok, out_of_range, unseen)]
        return words.iloc[np.concatenate(picked)] if sum(map(len, picked)) else None

    return _count(counts, null, rows_mismatch, rows_range, rows_unseen, nullable=nullable,
                  bits=bits, examples=examples)


def _count(counts: _Counts, null: np.ndarray, mismatch: np.ndarray, out_of_range: np.ndarray,
           unseen: np.ndarray, *, nullable: bool, bits: list[np.ndarray] | None,
           examples: Callable[[], pd.Series | None]) -> np.ndarray:
    """Add a chunk's masks to ``counts`` (and ``bits``); its violating-row mask.
    ``examples``: the offending values, mismatches first, asked only while too few."""
    violating: np.ndarray = mismatch | out_of_range | unseen
    if not nullable:
        violating |= null
    if bits is not None:
        bits.append(null * np.uint8(_NULL) | mismatch * np.uint8(_MISMATCH)
                    | out_of_range * np.uint8(_RANGE) | unseen * np.uint8(_UNSEEN)
                    | violating * np.uint8(_VIOLATING))
    counts.rows += len(null)
    counts.nulls += int(np.count_nonzero(null))
    counts.mismatches += int(np.count_nonzero(mismatch))
    counts.out_of_range += int(np.count_nonzero(out_of_range))
    counts.unseen += int(np.count_nonzero(unseen))
    counts.violating += int(np.count_nonzero(violating))
    if len(counts.examples) < _EXAMPLES and (mismatch.any() or out_of_range.any()
                                             or unseen.any()):
        found = examples()
        for text in _examples(found) if found is not None else ():
            if text not in counts.examples and len(counts.examples) < _EXAMPLES:
                counts.examples.append(text)
    return violating


class SchemaAccumulator:
    """Measures a window chunk by chunk (bounded memory); ``result()`` equals one pass.

    A feature absent from a chunk counts as null there; absent from every chunk, it is
    a missing column and every row violates the contract.
    """

    def __init__(self, schema: ModelSchema, config: SchemaCheckConfig) -> None:
        self.schema = schema
        self.config = config
        self.rows = 0
        self.violating_rows = 0
        self._features = {spec.name: _Counts() for spec in schema.features}
        self._prediction = _Counts()
        self._has_predictions = False
        self._unexpected: dict[str, _Counts] = {}
        # Per grouping (segment column): per group id, per contract column (features, then
        # the prediction), rows per violation pattern; and rows / violating rows per group.
        self._patterns: dict[str, np.ndarray] = {}
        self._group_rows: dict[str, np.ndarray] = {}
        self._group_violating: dict[str, np.ndarray] = {}

    def add(self, features: pd.DataFrame, predictions: pd.Series | None,
            groups: dict[str, tuple[np.ndarray, int]] | None = None,
            texts: Mapping[str, TextCodes] | None = None,
            prediction_labels: TextCodes | None = None) -> None:
        """Measure one chunk. ``groups``: per grouping, each row's group id and the number
        of ids so far (ids stay the same across chunks), so that ``group_result`` can say
        what a one-pass check of a group's rows alone would. ``texts``: features whose
        rows are all texts or nulls, as codes into their distinct texts (the same figures,
        each distinct text judged once). ``prediction_labels``: each prediction's
        ``label_text`` as codes (the same figures, each class looked up once)."""
        n = len(features) if predictions is None else max(len(features), len(predictions))
        violating = np.zeros(n, dtype=bool)
        bits: list[np.ndarray] | None = [] if groups else None
        self._measure_columns(features, predictions, n, violating, bits, texts or {},
                              prediction_labels)
        if groups and bits is not None:
            self._count_groups(groups, bits, violating)

    def _count_groups(self, groups: dict[str, tuple[np.ndarray, int]],
                      bits: list[np.ndarray], violating: np.ndarray) -> None:
        if self._has_predictions and len(bits) == len(self.schema.features):
            bits.append(np.zeros(len(violating), dtype=np.uint8))  # a chunk without them
        width = len(self.schema.features) + 1
        while len(bits) < width:
            bits.append(np.zeros(len(violating), dtype=np.uint8))
        for name, (ids, size) in groups.items():
            found = self._patterns.get(name)
            if found is None or found.shape[0] < size:
                grown = np.zeros((size, width, _PATTERNS), dtype=np.int64)
                rows = np.zeros(size, dtype=np.int64)
                bad = np.zeros(size, dtype=np.int64)
                if found is not None:
                    grown[:found.shape[0]] = found
                    rows[:found.shape[0]] = self._group_rows[name]
                    bad[:found.shape[0]] = self._group_violating[name]
                self._patterns[name], self._group_rows[name] = grown, rows
                self._group_violating[name] = bad
            patterns = self._patterns[name]
            base = ids.astype(np.int64) * _PATTERNS
            for col, col_bits in enumerate(bits):
                patterns[:size, col] += np.bincount(base + col_bits, minlength=size * _PATTERNS
                                                    ).reshape(size, _PATTERNS)
            self._group_rows[name][:size] += np.bincount(ids, minlength=size)
            self._group_violating[name][:size] += np.bincount(ids, weights=violating,
                                                              minlength=size).astype(np.int64)

    def group_result(self, name: str, ids: Iterable[int], min_rows: int = 1) -> SchemaResult:
        """The check of the rows whose group id (in grouping ``name``) is one of ``ids``:
        the figures ``check_schema`` gives of those rows alone, but for the examples
        (none) and the unexpected columns (the window's)."""
        picked = list(ids)
        patterns = self._patterns[name][picked].sum(axis=0)
        n = int(self._group_rows[name][picked].sum())
        count = int(self._group_violating[name][picked].sum())
        has = np.arange(_PATTERNS)

        def counts(col: int) -> _Counts:
            per = patterns[col]
            return _Counts(rows=n, nulls=int(per[(has & _NULL) > 0].sum()),
                           mismatches=int(per[(has & _MISMATCH) > 0].sum()),
                           out_of_range=int(per[(has & _RANGE) > 0].sum()),
                           unseen=int(per[(has & _UNSEEN) > 0].sum()),
                           violating=int(per[(has & _VIOLATING) > 0].sum()), seen=True)

        missing = [name for name, c in self._features.items() if not c.seen] if n else []
        reports: list[ColumnReport] = []
        for col, spec in enumerate(self.schema.features):
            if not self._features[spec.name].seen:
                if n:
                    reports.append(ColumnReport(spec.name, "feature", spec.type, "missing",
                                                null_rate=1.0, nulls_allowed=spec.nullable,
                                                violation_rate=1.0))
                continue
            reports.append(_report(spec.name, "feature", spec.type, spec.nullable,
                                   counts(col)))
        pred = self.schema.prediction
        if self._has_predictions and pred is not None:
            reports.append(_report(pred.column, "prediction", pred.type, True,
                                   counts(len(self.schema.features))))
        unexpected = list(self._unexpected) if n else []
        for col_name, c in self._unexpected.items():
            if n:
                reports.append(ColumnReport(col_name, "feature", None, "unexpected",
                                            null_rate=c.rate(c.nulls)))
        return _judge(n, n if missing else count, reports, missing, unexpected, self.config,
                      min_rows)

    def _measure_columns(self, features: pd.DataFrame, predictions: pd.Series | None, n: int,
                         violating: np.ndarray, bits: list[np.ndarray] | None,
                         texts: Mapping[str, TextCodes],
                         prediction_labels: TextCodes | None = None) -> None:
        for spec in self.schema.features:
            counts = self._features[spec.name]
            coded = None
            if spec.name in features.columns:
                counts.seen = True
                series = _numbered(features[spec.name])
                coded = texts.get(spec.name)
                if coded is not None and len(coded) != n:
                    coded = None
            else:
                series = pd.Series([None] * n, dtype=object)
            violating |= _measure(
                series, counts, ftype=spec.type, nullable=spec.nullable, low=spec.min,
                high=spec.max, allowed=spec.allowed if spec.type == "category" else None,
                bits=bits, texts=coded,
            )
        pred = self.schema.prediction
        if predictions is not None and pred is not None:
            self._has_predictions = True
            violating |= _measure(
                _numbered(predictions), self._prediction, ftype=pred.type,
                nullable=True, low=pred.min, high=pred.max, allowed=pred.classes, bits=bits,
                labels=prediction_labels,
            )
        known = set(self.schema.feature_names)
        for name in features.columns:
            if name not in known:
                # Rows of earlier chunks lacked the column: they count as nulls.
                counts = self._unexpected.setdefault(
                    str(name), _Counts(rows=self.rows, nulls=self.rows))
                counts.nulls += int(features[name].isna().sum())
        for counts in self._unexpected.values():
            counts.rows += n
        self.rows += n
        self.violating_rows += int(np.count_nonzero(violating))

    def result(self, min_rows: int = 1) -> SchemaResult:
        n = self.rows
        # An empty window shows no column at all: that is no evidence of a missing one.
        missing = [name for name, c in self._features.items() if not c.seen] if n else []
        count = n if missing else self.violating_rows
        reports: list[ColumnReport] = []
        for spec in self.schema.features:
            c = self._features[spec.name]
            if not c.seen and not n:
                continue
            if not c.seen:
                reports.append(ColumnReport(spec.name, "feature", spec.type, "missing",
                                            null_rate=1.0, nulls_allowed=spec.nullable,
                                            violation_rate=1.0 if n else 0.0))
                continue
            reports.append(_report(spec.name, "feature", spec.type, spec.nullable, c))
        pred = self.schema.prediction
        if self._has_predictions and pred is not None:
            reports.append(_report(pred.column, "prediction", pred.type, True, self._prediction))
        unexpected = list(self._unexpected)
        for name, c in self._unexpected.items():
            reports.append(ColumnReport(name, "feature", None, "unexpected",
                                        null_rate=c.rate(c.nulls)))
        return _judge(n, count, reports, missing, unexpected, self.config, min_rows)


def _report(column: str, role: str, ftype: str, nullable: bool, c: _Counts) -> ColumnReport:
    return ColumnReport(
        column=column,
        role=role,  # type: ignore[arg-type]
        expected_type=ftype,
        state="present",
        null_rate=c.rate(c.nulls),
        nulls_allowed=nullable,
        type_mismatch_rate=c.rate(c.mismatches),
        out_of_range_rate=c.rate(c.out_of_range),
        unseen_category_rate=c.rate(c.unseen),
        violation_rate=c.rate(c.violating),
        examples=tuple(c.examples),
    )


def check_schema(
    features: pd.DataFrame,
    predictions: pd.Series | None,
    schema: ModelSchema,
    *,
    config: SchemaCheckConfig,
    min_rows: int = 1,
) -> SchemaResult:
    """Measure one window against the contract; pure, no I/O."""
    acc = SchemaAccumulator(schema, config)
    acc.add(features, predictions)
    return acc.result(min_rows)


def _judge(
    n: int, count: int, reports: list[ColumnReport], missing: list[str], unexpected: list[str],
    config: SchemaCheckConfig, min_rows: int,
) -> SchemaResult:
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
