"""Log rows from a JSON-lines batch, parsed by Arrow: the fast path of an HTTP log batch
(and of a JSON-lines file).

``pyarrow.json.read_json`` parses the whole body in C; its columns are mapped onto what
``ArrowLogs`` checks (a ``features`` object flattened into columns, a ``probabilities``
object into the layout's probability columns, epoch numbers and ISO text into
microsecond timestamps as ``parse_time`` reads them). Where Arrow's reading could store
something else than the row path (``json.loads`` per line, then ``make_record``), the
batch is refused with ``NotFast`` and the caller reads it row by row:

- Arrow fills a key missing from a line with null, and keeps one key order for all
  lines; ``json.loads`` keeps each line's keys as they are. So every line must hold the
  same keys in the same order (only the optional top-level fields may come and go).
- Arrow reads a column of ints and floats as floats, and an int beyond 64 bits as a
  float; the row path keeps an int an int. So no column may mix the two, and a column of
  ints must be read as ints.
- Arrow takes ``-NaN`` and ``Inf``, which ``json.loads`` refuses, and reads ISO-looking
  text as times: neither is let through.

These are answered without Python per line: from the types Arrow inferred, one pattern
of a line is built (its keys in order, each value's tokens: a float column takes no int
token, and no ``-NaN``), and Arrow's RE2 matches every line against it; all must match.
Inferred rather than explicit types: a batch's shape is not known before it is read
(an explicit schema saved 0.3 ms of Arrow's 1.1 ms per 500 rows, not worth a cache).

``line_ids`` reads only the request id that starts each line, for a file loaded again:
a chunk whose ids are all stored needs no parse (which costs five times that scan).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import numpy as np

from monitor.errors import RowProblem
from monitor.store.arrow_logs import LogLayout, NotFast
from monitor.store.logs import EARLIEST, LATEST, record_time
from monitor.times import EPOCH

__all__ = ["JsonBatch", "line_ids", "read_json_batch"]

# JSON tokens as ``json.loads`` reads them (RE2 syntax).
_INT = r"-?(?:0|[1-9][0-9]*)"
_FLOAT = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
_STR = r'"(?:[^"\\]|\\.)*"'
# Fields the row path reads with ``row.get``: absent or null is all one to it.
_OPTIONAL = ("latency_ms", "error", "error_message", "model_version", "fallback_reason")
# Read as floats by the row path (``float``, ``fromtimestamp``), ints or not: equal for the
# ints a float holds exactly, and the times in range are such ints.
_NUMBERS = ("latency_ms", "timestamp")
_INTERNAL = "\x00p:"  # prefix of the probability columns built here (no key has a NUL)


def _pc() -> Any:
    import pyarrow.compute as pc

    return pc


class JsonBatch:
    """A body parsed and mapped: ``batch`` and ``layout`` for ``ArrowLogs``."""

    def __init__(self, batch: Any, layout: LogLayout) -> None:
        self.batch = batch
        self.layout = layout


def _lines(body: bytes) -> Any:
    """The body's lines as an Arrow string array (no copy of the text), each with its
    line feed."""
    import pyarrow as pa

    data = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(data == 0x0A)
    offsets = np.concatenate(([0], ends + 1, [len(body)] if len(body) and (
        not len(ends) or ends[-1] != len(body) - 1) else [])).astype(np.int32)
    lines = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.tobytes()),
                                        pa.py_buffer(body))
    try:
        lines.validate(full=True)
    except pa.ArrowException:
        raise NotFast("not UTF-8") from None
    return lines


# A line that starts with its request id, a plain JSON string: no escape (its text is its
# value), no control character (json.loads refuses one), printable ASCII at both ends (as
# the stored ids, which are stripped), more keys after it.
_EDGE = r"[!#-\[\]-~]"
_ID_FIRST = (rf'^[ \t]*\{{[ \t]*"request_id"[ \t]*:[ \t]*'
             rf'"(?P<id>{_EDGE}(?:[^"\\\x00-\x1f]*{_EDGE})?)"[ \t]*,')
# ``\u0041``: an escaped ASCII character, which could spell a second ``request_id`` key.
_ESCAPED_ASCII = r"\\u00[2-7][0-9a-fA-F]"


def line_ids(body: bytes) -> Any | None:
    """The request id of each non-blank line of a JSON-lines ``body``, read without parsing
    the lines: None unless every such line starts with its id (``_ID_FIRST``), names
    ``request_id`` nowhere else, and ends with the ``}`` of a whole object.

    What a line holds past its id is not read. For a line that is one JSON object, the id
    found is the one ``json.loads`` reads (the last ``request_id`` key wins there, so the
    key may occur once only, spelled without escapes). A line cut short or no object at
    all is refused here, whatever its id, so that its report is still the row path's.
    """
    import pyarrow as pa

    if b"\r" in body and body.count(b"\r") != body.count(b"\r\n"):
        return None  # a lone carriage return: Python reads it as a line break
    try:
        lines = _lines(body)
    except NotFast:
        return None
    pc = _pc()
    found = pc.struct_field(pc.extract_regex(lines, _ID_FIRST), [0])
    ids = found.drop_null()
    blank = (pc.sum(pc.match_substring_regex(lines, r"^\s*$")).as_py() or 0
             if found.null_count else 0)
    if found.null_count != blank or body.count(b'"request_id"') != len(ids):
        return None
    if len(ids) and pc.any(pc.match_substring_regex(lines, _ESCAPED_ASCII)).as_py():
        return None
    # The last character of each line before its line break (a CRLF's too) is a brace.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[:len(lines) + 1]
    data = np.frombuffer(body, dtype=np.uint8)
    last = offsets[1:][found.is_valid().to_numpy(zero_copy_only=False)] - 1
    last = last - (data[last] == 0x0A)
    last = last - (data[last] == 0x0D)
    if not (data[last] == ord("}")).all():
        return None
    return ids.cast(pa.string())


@lru_cache(maxsize=4096)
def _key(name: str) -> str:
    """A key as a line may spell it: as ``json.dumps`` writes it, with or without
    non-ASCII characters escaped."""
    spellings = {json.dumps(name), json.dumps(name, ensure_ascii=False)}
    return "(?:" + "|".join(re.escape(s) for s in sorted(spellings)) + ")"


def _value(t: Any, nullable: bool = True, numbers: bool = False) -> str:
    """The tokens a value of Arrow type ``t`` was read from, such that the row path reads
    the same: a float column holds no int token (Arrow would read 3 as 3.0), an int
    column no float; an object keeps its keys in one order."""
    import pyarrow as pa

    null = "|null" if nullable else ""
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return f"(?:true|false{null})"
    if pa.types.is_int64(t):
        return f"(?:{_INT}{null})"
    if pa.types.is_float64(t):
        # ``numbers``: a field the row path reads as a float whatever its token.
        return f"(?:{_FLOAT}|{_INT}|NaN{null})" if numbers else f"(?:{_FLOAT}|NaN{null})"
    if pa.types.is_string(t):
        return f"(?:{_STR}{null})"
    if pa.types.is_struct(t):
        return _object([(f.name, f.type, False) for f in t], nullable)
    raise NotFast(f"a value of type {t}")


def _object(fields: list[tuple[str, Any, bool]], nullable: bool = False,
            top: bool = False) -> str:
    """An object of these (key, type, optional) fields in this order (``top``: a line).
    Arrow has read each line as JSON already: commas need no checking here."""
    parts = []
    for name, t, optional in fields:
        item = rf"{_key(name)}\s*:\s*{_value(t, numbers=name in _NUMBERS and top)}\s*,?\s*"
        parts.append(f"(?:{item})?" if optional else item)
    body = rf"\{{\s*{''.join(parts)}\}}"
    return f"(?:{body}|null)" if nullable else body


@lru_cache(maxsize=64)
def _template(fields: tuple[tuple[str, Any, bool], ...]) -> str:
    """The pattern of a line (one per shape of batch: the clients send few)."""
    return rf"^\s*{_object(list(fields), top=True)}\s*$"


_ORDER = ("probabilities", *_OPTIONAL)


def _rank(field: tuple[str, Any, bool]) -> int:
    return _ORDER.index(field[0])


def _check_lines(body: bytes, table: Any, optional: set[str]) -> None:
    """Refuses a body unless each of its non-blank lines is one object whose keys and
    values Arrow read as ``json.loads`` does (``_value``)."""
    import pyarrow as pa

    pc = _pc()
    lines = _lines(body)
    blank = pc.sum(pc.match_substring_regex(lines, r"^\s*$")).as_py() or 0
    if blank + table.num_rows != len(lines):
        raise NotFast("a line that is not one object")
    fields = [(f.name, f.type, f.name in optional) for f in table.schema]
    # Arrow orders keys by first appearance; the client writes the optional ones in one
    # order (``_ORDER``), any of them left out: where they stand, put them in that order.
    places = [i for i, f in enumerate(fields) if f[2]]
    ordered = list(fields)
    for i, item in zip(places, sorted((fields[i] for i in places), key=_rank), strict=True):
        ordered[i] = item
    for keys in [fields] if ordered == fields else [fields, ordered]:
        try:
            good = pc.sum(pc.match_substring_regex(lines, _template(tuple(keys)))).as_py()
        except pa.ArrowException as exc:  # a pattern RE2 will not take: never expected
            raise NotFast(f"the line check: {exc}") from None
        if (good or 0) == table.num_rows:
            return
    raise NotFast("a line whose keys or values Arrow may read otherwise")


def _has_times(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return True
    return pa.types.is_struct(t) and any(_has_times(f.type) for f in t)


def _as_text(t: Any) -> Any:
    """The type with every time Arrow guessed from text as text again."""
    import pyarrow as pa

    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _as_text(f.type)) for f in t])
    return t


def _parse(body: bytes) -> Any:
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        table = pj.read_json(pa.BufferReader(body), read_options=pj.ReadOptions(
            use_threads=False, block_size=max(1 << 20, len(body) + 1)))
        if any(_has_times(f.type) for f in table.schema):
            # ISO-looking text: read as text, which parse_time reads as the row path does.
            schema = pa.schema([pa.field(f.name, _as_text(f.type)) for f in table.schema])
            table = pj.read_json(pa.BufferReader(body), read_options=pj.ReadOptions(
                use_threads=False, block_size=max(1 << 20, len(body) + 1)),
                parse_options=pj.ParseOptions(explicit_schema=schema))
    except (pa.ArrowException, UnicodeDecodeError, ValueError) as exc:
        raise NotFast(f"Arrow cannot read it: {exc}") from None
    batches = table.combine_chunks().to_batches()
    if len(batches) != 1:
        raise NotFast("no rows")
    return batches[0]


def _micros_of_seconds(column: Any) -> Any:
    """Epoch seconds as ``datetime.fromtimestamp`` reads them (CPython: the fraction of
    ``modf`` times 1e6, rounded half to even), in microseconds."""
    import pyarrow as pa

    if column.null_count:
        raise NotFast("timestamp: missing")
    low = (EARLIEST - EPOCH).total_seconds() - 1
    high = (LATEST - EPOCH).total_seconds() + 1
    if pa.types.is_integer(column.type):
        seconds = column.to_numpy().astype(np.int64)
        if len(seconds) and (seconds.min() < low or seconds.max() > high):
            raise NotFast("timestamp: out of range")
        micros = seconds * 1_000_000
    else:
        x = column.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(x).all() or (len(x) and (x.min() < low or x.max() > high)):
            raise NotFast("timestamp: missing or out of range")
        whole = np.trunc(x)
        part = np.rint((x - whole) * 1e6)
        whole = np.where(part >= 1e6, whole + 1, np.where(part < 0, whole - 1, whole))
        part = np.where(part >= 1e6, part - 1e6, np.where(part < 0, part + 1e6, part))
        micros = whole.astype(np.int64) * 1_000_000 + part.astype(np.int64)
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us"))


def _times(column: Any) -> Any:
    """The ``timestamp`` column as microsecond UTC times, as the row path reads each."""
    import pyarrow as pa

    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return _micros_of_seconds(column)
    if pa.types.is_string(column.type):
        try:
            moments = [record_time("timestamp", v) for v in column.to_pylist()]
        except RowProblem as exc:
            raise NotFast(str(exc)) from None
        return pa.array([m.replace(tzinfo=None) for m in moments], pa.timestamp("us"))
    raise NotFast(f"timestamp: type {column.type}")


def read_json_batch(body: bytes, prediction: str, probability_columns: dict[str, str],
                    skip: frozenset[str], default_version: str | None) -> JsonBatch:
    """The batch of a JSON-lines ``body`` (UTF-8, without a byte-order mark), its rows as
    ``_log_record`` reads each: ``prediction`` the contract's column (a line may call it
    ``prediction``), ``probability_columns`` class -> column, ``skip`` the columns of a
    flat line that are no feature. ``NotFast`` if Arrow's reading could differ."""
    import pyarrow as pa

    if b"\r" in body.replace(b"\r\n", b""):
        raise NotFast("a line ends with a lone carriage return")
    table = _parse(body)
    names = table.schema.names
    cols: dict[str, Any] = dict(zip(names, table.columns, strict=True))
    optional = set(_OPTIONAL)
    if not any(col in cols for col in probability_columns.values()):
        # A line without probabilities: null for them in the row path as here.
        optional.add("probabilities")
    _check_lines(body, table, optional)

    out: dict[str, Any] = {}
    for name in ("request_id", *_OPTIONAL):
        if name in cols:
            out[name] = cols[name]
    if "timestamp" not in cols:
        raise NotFast("timestamp: missing")
    out["timestamp"] = _times(cols["timestamp"])
    pred = prediction if prediction in cols else "prediction"
    if pred not in cols:
        raise NotFast("prediction: missing")
    out[pred] = cols[pred]

    probabilities = dict(probability_columns)
    proba = cols.get("probabilities")
    if proba is not None and pa.types.is_struct(proba.type):
        probabilities = {}
        for i, fld in enumerate(proba.type):
            probabilities[fld.name] = _INTERNAL + fld.name
            out[_INTERNAL + fld.name] = proba.field(i)
    elif proba is not None and not pa.types.is_null(proba.type):
        raise NotFast("probabilities: not an object in every row")
    else:
        for col in probability_columns.values():
            if col in cols:
                out[col] = cols[col]

    features = cols.get("features")
    if features is not None and pa.types.is_struct(features.type) and not features.null_count:
        items = [(fld.name, features.field(i)) for i, fld in enumerate(features.type)]
    elif features is not None and not pa.types.is_null(features.type):
        raise NotFast("features: not an object in every row")
    else:
        flat_skip = skip | ({"prediction"} if prediction not in cols else set())
        items = [(name, cols[name]) for name in names if name not in flat_skip]
    not_features = frozenset(out)
    for name, column in items:
        if name in out or name in ("features", "probabilities", *_OPTIONAL):
            raise NotFast(f"feature {name!r}: named as a log field")
        out[name] = column
    batch = pa.RecordBatch.from_arrays(list(out.values()), names=list(out))
    return JsonBatch(batch, LogLayout(pred, probabilities, not_features, default_version))
