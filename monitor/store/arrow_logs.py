"""Log rows from Arrow batches, checked and encoded a column at a time: the fast path of a
file load.

``make_record`` checks one entry at a time in Python, about 50 us a row, most of a
load's time. For a columnar file (Parquet) whose columns have plain types, the same
checks run here on whole columns in Arrow's kernels, and the stored forms (features and
prediction as JSON text, times as the column keeps them, PostgreSQL's COPY text) are
built the same way, with no Python per row.

It is a shortcut only. A batch it cannot vouch for entirely, a value ``make_record``
would refuse or any type it does not handle, raises ``NotFast``, and the caller loads
the file row by row instead, which reports each bad row. Where it accepts a batch, what
it stores equals what the row path stores: the same values, as JSON of the same types
(3.0 stays a float); only the spelling of the JSON text may differ (non-ASCII text is
kept as UTF-8 rather than escaped).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

from monitor.store.logs import (
    EARLIEST,
    LATEST,
    MAX_ID_LENGTH,
    MAX_ROW_CHARS,
    MAX_ROW_VALUES,
    MAX_VERSION_LENGTH,
)
from monitor.times import EPOCH

__all__ = ["ArrowLogs", "Encoded", "LogLayout", "NotFast", "copy_text", "request_ids",
           "sqlite_rows"]


class NotFast(Exception):
    """The batch needs the row-by-row path (the message says why, for the debug log)."""


@dataclass(frozen=True)
class LogLayout:
    """Which columns of a file are what: the prediction, the probability columns by
    class, the columns that are no feature (every other column is one), and the model
    version of rows that name none."""

    prediction: str
    probabilities: dict[str, str]
    not_features: frozenset[str]
    default_version: str | None = None


# Characters JSON text must escape: a text holding one is encoded by Python's json.
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
# An id that ``str.strip`` leaves as it is: printable ASCII at both ends (else: row path).
_PLAIN_EDGES = r"(?s)^[!-~](.*[!-~])?$"


def _pc() -> Any:
    import pyarrow.compute as pc

    return pc


def _any(mask: Any) -> bool:
    """Whether any value of a boolean array is true (nulls are not)."""
    return bool(_pc().any(mask).as_py() or False)


def _kind(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type)
                                      or pa.types.is_large_string(t.value_type)):
        return "str"
    return "other"


def _text(column: Any) -> Any:
    """A text column as plain ``string``."""
    import pyarrow as pa

    return column if column.type == pa.string() else column.cast(pa.string())


def _floats(name: str, column: Any) -> Any:
    """A float column as float64 with NaN as null (``clean_value``); infinity is a bad row."""
    import pyarrow as pa

    pc = _pc()
    column = column.cast(pa.float64())
    if _any(pc.is_inf(column)):
        raise NotFast(f"{name}: infinity")
    nan = pc.is_nan(column)
    if _any(nan):
        column = pc.if_else(nan, pa.scalar(None, pa.float64()), column)
    return column


def _check_value(name: str, column: Any, numbers_only: bool = False) -> None:
    """Raise ``NotFast`` unless every value of ``column`` is one ``clean_value`` keeps."""
    kind = _kind(column.type)
    allowed = ("null", "bool", "int", "float") if numbers_only else (
        "null", "bool", "int", "float", "str")
    if kind not in allowed:
        raise NotFast(f"{name}: type {column.type}")
    if kind == "float":
        _floats(name, column)


def _json(column: Any) -> Any:
    """Each value as JSON text (a checked column; nulls and NaN stay null)."""
    import pyarrow as pa

    pc = _pc()
    kind = _kind(column.type)
    if kind == "null":
        return pa.nulls(len(column), type=pa.string())
    if kind == "bool":
        return pc.if_else(column, "true", "false")
    if kind == "int":
        return column.cast(pa.string())
    if kind == "float":
        text = _floats("", column).cast(pa.string())
        # Arrow writes 3.0 as "3": add ".0" so that it reads back as a float.
        whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
        return pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    text = _text(column)
    if _any(pc.match_substring_regex(text, _NEEDS_ESCAPE)):
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False)
                         for v in text.to_pylist()], type=pa.string())
    return pc.binary_join_element_wise('"', text, '"', "")


def _chars(column: Any) -> Any | None:
    """Characters per value of a text column (0 for null); None for other columns."""
    import pyarrow as pa

    if _kind(column.type) != "str":
        return None
    return _pc().utf8_length(_text(column)).cast(pa.int64()).fill_null(0)


def _no_nul(name: str, column: Any) -> None:
    if _any(_pc().match_substring(column, "\x00")):
        raise NotFast(f"{name}: a NUL character")


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass
class Encoded:
    """Rows in stored form, one Arrow array per column of ``inference_logs``."""

    request_id: Any  # string
    ts: Any  # string, "YYYY-MM-DD HH:MM:SS.ffffff" (naive UTC, SQLite's form)
    features: Any  # string, JSON
    prediction: Any  # string, JSON; null for none
    probabilities: Any  # string, JSON; null for none
    latency_ms: Any  # float64
    error: Any  # bool
    error_message: Any  # string
    model_version: Any  # string
    fallback_reason: Any  # string

    def __len__(self) -> int:
        return len(self.request_id)


def request_ids(rid: Any) -> Any:
    """A batch's ``request_id`` column as the ids stored: text (plain at both ends, short,
    no NUL) or integers as text, no nulls; ``NotFast`` for anything else."""
    import pyarrow as pa

    pc = _pc()
    if rid is None or rid.null_count:
        raise NotFast("request_id: missing")
    kind = _kind(rid.type)
    if kind == "int":
        return rid.cast(pa.string())
    if kind != "str":
        raise NotFast(f"request_id: type {rid.type}")
    rid = _text(rid)
    if len(rid) and not pc.all(pc.match_substring_regex(rid, _PLAIN_EDGES)).as_py():
        raise NotFast("request_id: blank, or a space or non-ASCII at an end")
    _no_nul("request_id", rid)
    if len(rid) and pc.max(pc.utf8_length(rid)).as_py() > MAX_ID_LENGTH:
        raise NotFast("request_id: too long")
    return rid


class ArrowLogs:
    """One batch checked as ``make_record`` checks each of its rows (``NotFast`` instead of
    judging a row); ``encode`` gives its rows, or those a mask keeps, in stored form."""

    def __init__(self, batch: Any, layout: LogLayout) -> None:
        import pyarrow as pa

        pc = _pc()
        try:
            batch.validate(full=True)  # text that is not UTF-8: the row path names the field
        except pa.ArrowException as exc:
            raise NotFast(f"invalid data: {exc}") from None
        names = batch.schema.names
        if len(set(names)) != len(names):
            raise NotFast("repeated column names")
        if "features" in names or "probabilities" in names:
            raise NotFast("a features or probabilities object column")
        self.layout = layout
        self.n = n = batch.num_rows
        cols: dict[str, Any] = dict(zip(names, batch.columns, strict=True))
        self._cols = cols
        self.features = [name for name in names if name not in layout.not_features]
        if len(self.features) + len(layout.probabilities) > MAX_ROW_VALUES:
            raise NotFast("too many values")
        # Characters of the row's text, an upper bound of what make_record counts.
        chars: list[Any] = []

        self.ids = request_ids(cols.get("request_id"))

        # timestamp: a timestamp column without nulls (text and epoch seconds: row path).
        ts = cols.get("timestamp")
        if ts is None or not pa.types.is_timestamp(ts.type) or ts.null_count:
            raise NotFast("timestamp: not a timestamp column without nulls")
        try:
            # As the row path reads it: UTC, microseconds, nanoseconds truncated.
            ts = ts.cast(pa.timestamp("us"), safe=ts.type.unit != "ns")
        except pa.ArrowException:
            raise NotFast("timestamp: beyond microseconds") from None
        if n:
            micros = ts.cast(pa.int64())
            if (pc.min(micros).as_py() < _micros(EARLIEST)
                    or pc.max(micros).as_py() >= _micros(LATEST)):
                raise NotFast("timestamp: out of range")
        self.ts = ts

        # error and fallback_reason (a guard's fallback rows come from the logger).
        error = cols.get("error")
        if error is None or _kind(error.type) == "null":
            self.error = pa.repeat(False, n)
        elif _kind(error.type) == "bool":
            self.error = error.fill_null(False)
        else:
            raise NotFast(f"error: type {error.type}")
        fallback = cols.get("fallback_reason")
        if fallback is not None and fallback.null_count != len(fallback):
            raise NotFast("fallback_reason: values")

        # prediction: a scalar; missing (null or NaN) only on error rows.
        pred = cols.get(layout.prediction)
        if pred is None:
            raise NotFast("prediction: no column")
        _check_value("prediction", pred)
        missing = (pc.is_null(pred, nan_is_null=True) if _kind(pred.type) == "float"
                   else pc.is_null(pred))
        if _any(pc.and_(missing, pc.invert(self.error))):
            raise NotFast("prediction: missing")
        chars.append(_chars(pred))

        # probabilities: numbers.
        for cls, col in layout.probabilities.items():
            if col in cols:
                _check_value(f"probabilities.{cls}", cols[col], numbers_only=True)
        chars.append(sum(len(str(cls)) for cls in layout.probabilities))

        # latency_ms: a number >= 0.
        latency = cols.get("latency_ms")
        if latency is None or _kind(latency.type) == "null":
            self.latency = pa.nulls(n, type=pa.float64())
        elif _kind(latency.type) in ("int", "float"):
            self.latency = _floats("latency_ms", latency)
            if _any(pc.less(self.latency, 0)):
                raise NotFast("latency_ms: negative")
        else:
            raise NotFast(f"latency_ms: type {latency.type}")

        # error_message, model_version: text without NUL; a version of 100 characters.
        texts = {}
        for name in ("error_message", "model_version"):
            column = cols.get(name)
            if column is None or _kind(column.type) == "null":
                texts[name] = pa.nulls(n, type=pa.string())
            elif _kind(column.type) == "str":
                texts[name] = _text(column)
                _no_nul(name, texts[name])
                chars.append(_chars(texts[name]))
            else:
                raise NotFast(f"{name}: type {column.type}")
        version = texts["model_version"]
        if n and (pc.max(pc.utf8_length(version)).as_py() or 0) > MAX_VERSION_LENGTH:
            raise NotFast("model_version: too long")
        if layout.default_version is not None:
            version = version.fill_null(layout.default_version)
        self.error_message, self.model_version = texts["error_message"], version

        # features: scalars, the row's text within MAX_ROW_CHARS.
        for name in self.features:
            _check_value(name, cols[name])
            chars.append(_chars(cols[name]))
        chars.append(sum(map(len, self.features)))
        counted = [c for c in chars if c is not None and not isinstance(c, int)]
        fixed = sum(c for c in chars if isinstance(c, int))
        if n and counted:
            total = counted[0]
            for more in counted[1:]:
                total = pc.add(total, more)
            if pc.max(total).as_py() + fixed > MAX_ROW_CHARS:
                raise NotFast("a row's text exceeds the limit")
        elif fixed > MAX_ROW_CHARS:
            raise NotFast("a row's text exceeds the limit")

    @property
    def columns(self) -> dict[str, Any]:
        """The batch's columns by name, as read (``features`` names the feature columns)."""
        return self._cols

    def encode(self, keep: Any = None) -> Encoded:
        """The rows (those ``keep``, a boolean mask, is true for) in stored form."""
        import pyarrow as pa

        pc = _pc()

        def pick(column: Any) -> Any:
            return column if keep is None else column.filter(keep)

        n = self.n if keep is None else int(pc.sum(keep).as_py() or 0)
        parts: list[Any] = []
        for i, name in enumerate(self.features):
            parts += [("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":",
                      _json(pick(self._cols[name])).fill_null("null")]
        features = (pc.binary_join_element_wise(*parts, "}", "") if parts
                    else pa.array(["{}"] * n, type=pa.string()))
        probabilities = pa.nulls(n, type=pa.string())
        present = [(cls, col) for cls, col in self.layout.probabilities.items()
                   if col in self._cols]
        if present:
            values = [pick(self._cols[col]) for _, col in present]
            parts = []
            for i, (cls, col) in enumerate(self.layout.probabilities.items()):
                text = (_json(pick(self._cols[col])).fill_null("null") if col in self._cols
                        else "null")
                parts += [("{" if i == 0 else ",") + json.dumps(str(cls)) + ":", text]
            joined = pc.binary_join_element_wise(*parts, "}", "")
            none = None
            for value in values:
                null = (pc.is_null(value, nan_is_null=True) if _kind(value.type) == "float"
                        else pc.is_null(value))
                none = null if none is None else pc.and_(none, null)
            probabilities = pc.if_else(none, pa.scalar(None, pa.string()), joined)
        return Encoded(
            request_id=pick(self.ids),
            # Arrow's text of a timestamp[us] is SQLite's form (strftime: 30x slower).
            ts=pick(self.ts).cast(pa.string()),
            features=features,
            prediction=_json(pick(self._cols[self.layout.prediction])),
            probabilities=probabilities,
            latency_ms=pick(self.latency),
            error=pick(self.error),
            error_message=pick(self.error_message),
            model_version=pick(self.model_version),
            fallback_reason=pa.nulls(n, type=pa.string()),
        )


def _now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_rows(rows: Encoded, model: str) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples in ``monitor.store.logs._LOG_COLUMNS`` order, for SQLite."""
    received = _now_text()
    return zip(repeat(model), rows.model_version.to_pylist(), rows.request_id.to_pylist(),
               rows.ts.to_pylist(), rows.features.to_pylist(), rows.prediction.to_pylist(),
               rows.probabilities.to_pylist(), rows.latency_ms.to_pylist(),
               rows.error.to_pylist(), rows.error_message.to_pylist(), repeat(received),
               rows.fallback_reason.to_pylist())


def _copy_field(column: Any, raw: bool = False) -> Any:
    """A text column as COPY text: backslash, tab, newline and return escaped; null \\N.
    ``raw``: JSON text, which holds no raw control characters, only backslashes."""
    pc = _pc()
    column = pc.replace_substring(column, "\\", "\\\\")
    if not raw:
        for char, escaped in (("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
            column = pc.replace_substring(column, char, escaped)
    return column.fill_null("\\N")


def _copy_constant(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace(
        "\r", "\\r")


def copy_text(rows: Encoded, model: str) -> memoryview:
    """Rows in PostgreSQL's COPY text format, columns in ``_LOG_COLUMNS`` order."""
    import pyarrow as pa

    pc = _pc()
    fields = [
        _copy_constant(model), _copy_field(rows.model_version), _copy_field(rows.request_id),
        rows.ts, _copy_field(rows.features, raw=True), _copy_field(rows.prediction, raw=True),
        _copy_field(rows.probabilities, raw=True),
        rows.latency_ms.cast(pa.string()).fill_null("\\N"),
        pc.if_else(rows.error, "t", "f"), _copy_field(rows.error_message),
        _copy_constant(_now_text()), _copy_field(rows.fallback_reason),
    ]
    lines = pc.binary_join_element_wise(*fields, "\t")
    lines = pc.binary_join_element_wise(lines, "\n", "")
    if not isinstance(lines, pa.Array):  # no rows: a scalar
        return memoryview(b"")
    import numpy as np

    _, offsets, data = lines.buffers()
    if data is None or not len(lines):
        return memoryview(b"")
    bounds = np.frombuffer(offsets, dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return memoryview(data)[int(bounds[0]):int(bounds[-1])]
