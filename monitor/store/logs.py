"""Writing inference logs and ground-truth labels, and counting fallback answers.

Stdlib and SQLAlchemy only: the serving-side ``InferenceLogger`` calls this from its
background thread, where pandas must not be loaded.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from monitor.errors import DatabaseError, RowProblem, first_line, shown
from monitor.store.db import driver_connection
from monitor.store.staging import DirectLoad, StagedLoad, direct_load, staged_load
from monitor.store.tables import ground_truth, inference_logs
from monitor.times import parse_time

if TYPE_CHECKING:
    from monitor.store.arrow_logs import Encoded

__all__ = [
    "LabelLoad",
    "LogLoad",
    "LogRecord",
    "RowProblem",
    "clean_value",
    "insert_labels",
    "insert_log_batch",
    "insert_logs",
    "label_load",
    "log_load",
    "make_record",
    "parse_time",
    "record_time",
    "request_id_of",
    "stored_request_ids",
]


# Column sizes of the tables; checked per row so that one long value is one bad row,
# not a failed batch.
MAX_ID_LENGTH = 200
MAX_VERSION_LENGTH = 100
MAX_FALLBACK_REASON_LENGTH = 40
# What one row may hold, so that a single entry cannot hold the GIL for long in one C
# call (the JSON encoding of a row is one) or break a reader: characters of all its
# text, values of all its lists and objects, and levels of nesting.
MAX_ROW_CHARS = 1_000_000
MAX_ROW_VALUES = 100_000
MAX_DEPTH = 32
# Times outside this range are refused: windows are computed from them (9999-12-31
# has no next day) and pandas holds them in nanoseconds (1677-2262).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One inference as stored: features as received, JSON types only."""

    request_id: str
    ts: datetime
    features: dict[str, Any]
    prediction: Any = None
    probabilities: dict[str, float] | None = None
    latency_ms: float | None = None
    error: bool = False
    error_message: str | None = None
    model_version: str | None = None
    # Why the serving guard answered instead of the model (flag, error, timeout,
    # overload); None: the model answered.
    fallback_reason: str | None = None


_INFINITIES = (math.inf, -math.inf)
_FLOAT_MAX = sys.float_info.max
_NOT_UNICODE = re.compile("[\ud800-\udfff]")


class _Budget:
    """What is left of one row's size limits."""

    __slots__ = ("chars", "values")

    def __init__(self) -> None:
        self.chars = MAX_ROW_CHARS
        self.values = MAX_ROW_VALUES


def clean_value(field: str, value: Any, budget: _Budget | None = None) -> Any:
    """A JSON-ready value: NaN becomes null, numpy scalars are unboxed; infinity, an int
    beyond a float's range, text that is not valid Unicode (bytes that were not UTF-8),
    nesting deeper than ``MAX_DEPTH`` and rows over the size limits are refused with a
    ``RowProblem`` naming the field."""
    return _clean(field, value, _Budget() if budget is None else budget, 0)


def _clean(field: str, value: Any, budget: _Budget, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        budget.chars -= len(value)
        if budget.chars < 0:
            raise _too_much_text(field)
        return value if value.isascii() else _unicode(field, value)
    if kind is float:
        if value != value:  # NaN
            return None
        if value in _INFINITIES:
            raise _infinite(field, value)
        return value
    if kind is int:
        if -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return value
        raise _too_big(field, value)
    if value is None or kind is bool:
        return value
    if kind is dict:
        return _clean_mapping(field, value, budget, depth)
    if kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise _too_deep(field)
        budget.values -= len(value)
        if budget.values < 0:
            raise _too_many_values(field)
        return [_clean(field, v, budget, depth + 1) for v in value]
    # Subclasses (numpy's float64, str_, an IntEnum) as the plain value, by the base
    # class's own conversion, which a subclass cannot override.
    if isinstance(value, str):
        return _clean(field, str.__str__(value), budget, depth)
    if isinstance(value, int):
        return _clean(field, int.__int__(value), budget, depth)
    if isinstance(value, float):
        return _clean(field, float.__float__(value), budget, depth)
    if value.__class__.__name__ in ("NAType", "NaTType"):  # NaT is a datetime
        return None
    if isinstance(value, datetime):
        return parse_time(field, value).isoformat()
    if isinstance(value, Mapping):
        return _clean_mapping(field, value, budget, depth)
    if isinstance(value, list | tuple):
        return _clean(field, list(value), budget, depth)
    item = getattr(value, "item", None)  # numpy / pandas scalars, without importing them
    if callable(item):
        try:
            unboxed = item()
        except (TypeError, ValueError):
            pass
        else:
            if type(unboxed) is not kind:
                return _clean(field, unboxed, budget, depth)
    raise RowProblem(field, f"cannot store a value of type {type(value).__name__}")


def _clean_mapping(
    prefix: str | None, mapping: Mapping[Any, Any], budget: _Budget, depth: int
) -> dict[str, Any]:
    """A mapping with text keys and clean values. ``prefix`` None: the features, whose
    names are the fields; else problems name ``prefix.key``.

    The loop does the common scalars itself: it runs for every feature of every row.
    """
    where = prefix or "features"
    if depth >= MAX_DEPTH:
        raise _too_deep(where)
    budget.values -= len(mapping)
    if budget.values < 0:
        raise _too_many_values(where)
    out: dict[str, Any] = {}
    chars = 0
    room = budget.chars
    name = where
    try:
        for key, value in mapping.items():
            name = key if type(key) is str and key.isascii() else _key_text(key)
            chars += len(name)
            kind = type(value)
            if kind is str:
                chars += len(value)
                if chars > room:
                    raise _too_much_text(name)
                if not value.isascii():
                    _unicode(name, value)
            elif kind is float:
                if value != value:  # NaN
                    value = None
                elif value in _INFINITIES:
                    raise _infinite(name, value)
            elif kind is int:
                if not -_FLOAT_MAX <= value <= _FLOAT_MAX:
                    raise _too_big(name, value)
            elif value is not None and kind is not bool:
                value = _clean(name, value, budget, depth + 1)
            out[name] = value
    except RowProblem as exc:
        if prefix is None:
            raise
        raise RowProblem(f"{prefix}.{exc.field}", exc.detail) from None
    budget.chars -= chars
    if budget.chars < 0:
        raise _too_much_text(where)
    return out


def _key_text(key: Any) -> str:
    try:
        name = key if type(key) is str else str(key)
    except Exception:
        raise RowProblem("features", f"a key cannot be read as text: {shown(key)}") from None
    return name if name.isascii() else _unicode(name, name)


def _infinite(field: str, value: float) -> RowProblem:
    return RowProblem(field, f"value is {value}; only finite numbers can be stored")


def _too_big(field: str, value: int) -> RowProblem:
    return RowProblem(field, f"is an integer of about {int(value.bit_length() * 0.30103):,} "
                      "digits, beyond the range of a float (1.8e308)")


def _too_deep(field: str) -> RowProblem:
    return RowProblem(field, f"is nested more than {MAX_DEPTH} levels deep")


def _too_many_values(field: str) -> RowProblem:
    return RowProblem(field, f"the row holds more than {MAX_ROW_VALUES:,} values")


def _too_much_text(field: str) -> RowProblem:
    return RowProblem(field, f"the row's text exceeds {MAX_ROW_CHARS:,} characters")


def _unicode(field: str, value: str) -> str:
    bad = _NOT_UNICODE.search(value)
    if bad is None:
        return value
    code = ord(bad.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        raise RowProblem(field, f"is not valid UTF-8 (byte 0x{code - 0xDC00:02x} at "
                         f"character {bad.start() + 1:,})")
    raise RowProblem(field, f"holds a lone surrogate (U+{code:04X}), which is not valid "
                     "Unicode")


def record_time(field: str, value: Any) -> datetime:
    """A log or label time (see ``parse_time``) between ``EARLIEST`` and ``LATEST``."""
    moment = parse_time(field, value)
    if not EARLIEST <= moment < LATEST:
        raise RowProblem(field, f"{moment.isoformat()} is outside the supported range "
                         f"{EARLIEST.year}-{LATEST.year - 1}")
    return moment


def request_id_of(value: Any) -> str:
    """A request id as text; 12.0 (an id column that passed through floats) reads as 12."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RowProblem("request_id", "is missing")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and len(value) > 2 * MAX_ID_LENGTH:
        raise RowProblem("request_id", f"is longer than {MAX_ID_LENGTH} characters")
    rid = _text("request_id", value).strip()
    if not rid:
        raise RowProblem("request_id", "is missing")
    if len(rid) > MAX_ID_LENGTH:
        raise RowProblem("request_id", f"is longer than {MAX_ID_LENGTH} characters")
    return rid


def _text(field: str, value: Any) -> str:
    """``value`` as text for a text column: valid Unicode, no NUL."""
    try:
        text = value if type(value) is str else str(value)
    except ValueError:  # an int too long to print
        raise RowProblem(field, f"cannot be read as text: {shown(value)}") from None
    if not text.isascii():
        _unicode(field, text)
    if "\x00" in text:
        raise RowProblem(field, "contains a NUL character, which databases cannot store")
    return text


def make_record(fields: Mapping[str, Any], *, default_version: str | None = None,
                require_prediction: bool = True) -> LogRecord:
    """Validate one log entry's fields into a record; raise ``RowProblem`` on the first bad one.

    A record made here can always be stored: its values encode as JSON and fit the columns.
    ``require_prediction``: False for a features-only model (``task: features``), whose
    entries carry no prediction (stored as null).
    """
    rid = request_id_of(fields.get("request_id"))
    budget = _Budget()
    features = fields.get("features")
    if isinstance(features, str):
        features = _json_text("features", features)
    if not isinstance(features, Mapping):
        raise RowProblem("features", "must be an object of feature name -> value")
    error = fields.get("error")
    if type(error) is not bool:
        error = False if error is None else bool(_clean("error", error, budget, 0))
    fallback = fields.get("fallback_reason")
    if fallback is not None:
        fallback = (None if _clean("fallback_reason", fallback, budget, 0) is None
                    else _text("fallback_reason", fallback).strip())
        if fallback is not None and len(fallback) > MAX_FALLBACK_REASON_LENGTH:
            raise RowProblem("fallback_reason",
                             f"is longer than {MAX_FALLBACK_REASON_LENGTH} characters")
    prediction = _clean("prediction", fields.get("prediction"), budget, 0)
    # A fallback answer is the configured default prediction, which may be null.
    if prediction is None and require_prediction and not error and not fallback:
        raise RowProblem("prediction", "is missing (only error and fallback rows may lack a "
                         "prediction)")
    probabilities = fields.get("probabilities")
    if probabilities is not None:
        if not isinstance(probabilities, Mapping):
            raise RowProblem("probabilities", "must be an object of class -> probability")
        probabilities = _clean_mapping("probabilities", probabilities, budget, 0)
        if any(v is not None and not isinstance(v, int | float)
               for v in probabilities.values()):
            raise RowProblem("probabilities", "values must be numbers")
        if all(v is None for v in probabilities.values()):
            probabilities = None
    latency = fields.get("latency_ms")
    if latency is not None:
        latency = _clean("latency_ms", latency, budget, 0)
        if latency is not None:
            if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
                raise RowProblem("latency_ms", f"must be a number >= 0, got {shown(latency)}")
            latency = float(latency)
    message = fields.get("error_message")
    if message is not None:
        message = (None if _clean("error_message", message, budget, 0) is None
                   else _text("error_message", message))
    version = fields.get("model_version")
    version = (default_version if version is None or _clean("model_version", version, budget,
                                                             0) is None
               else _text("model_version", version))
    if version is not None and len(version) > MAX_VERSION_LENGTH:
        raise RowProblem("model_version", f"is longer than {MAX_VERSION_LENGTH} characters")
    return LogRecord(
        request_id=rid,
        ts=record_time("timestamp", fields.get("timestamp")),
        features=_clean_mapping(None, features, budget, 0),
        prediction=prediction,
        probabilities=probabilities,
        latency_ms=latency,
        error=error,
        error_message=message,
        model_version=version,
        fallback_reason=fallback or None,
    )


def _json_text(field: str, text: str) -> Any:
    """A JSON value sent as text (a CSV cell holding all features)."""
    if len(text) > MAX_ROW_CHARS:
        raise RowProblem(field, f"is longer than {MAX_ROW_CHARS:,} characters")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowProblem(field, f"is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise RowProblem(field, f"is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise RowProblem(field, f"is not valid JSON ({exc})") from None


_LOG_COLUMNS = (
    "model", "model_version", "request_id", "ts", "features", "prediction", "probabilities",
    "latency_ms", "error", "error_message", "received_at", "fallback_reason",
)
_LABEL_COLUMNS = ("model", "request_id", "label", "ts", "received_at")
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _naive_utc(value: datetime) -> datetime:
    # Record times are already UTC (parse_time); only other zones need converting.
    if value.tzinfo is None:
        return value
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


def _sqlite_time(value: datetime) -> str:
    # The exact text SQLAlchemy's SQLite DateTime writes, so that every writer of a
    # table produces one canonical form and text range filters stay right.
    if value.tzinfo is UTC:  # a record's time (parse_time): cut the "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    return _naive_utc(value).isoformat(sep=" ", timespec="microseconds")


def _bulk_insert_ignoring_duplicates(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> int:
    """Insert rows, skipping (model, request_id) pairs already stored; return rows added.

    Goes below SQLAlchemy's per-value type processing, which cost half the load time:
    SQLite gets one executemany of INSERT OR IGNORE, PostgreSQL a COPY into a
    temporary table and one INSERT ... ON CONFLICT DO NOTHING from it. Both run on
    the caller's connection, inside its transaction.
    """
    if not rows:
        return 0
    dbapi = conn.dialect.loaded_dbapi
    try:
        return _bulk_insert(conn, table, columns, rows)
    except dbapi.Error as exc:
        # Raw driver calls bypass SQLAlchemy's error wrapping; restore it so callers
        # handle one family of exceptions (DataError, OperationalError, ...).
        raise sa.exc.DBAPIError.instance(
            f"bulk insert into {table.name}", None, exc, dbapi.Error
        ) from exc


def _bulk_insert(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> int:
    raw = driver_connection(conn)
    names = ", ".join(columns)
    dialect = conn.dialect.name
    if dialect == "sqlite":
        marks = ", ".join("?" * len(columns))
        before = raw.total_changes
        raw.executemany(f"INSERT OR IGNORE INTO {table.name} ({names}) VALUES ({marks})", rows)
        return int(raw.total_changes - before)
    if dialect == "postgresql":
        staging = f"mqm_incoming_{table.name}"
        with raw.cursor() as cur:
            # Only the loaded columns, with their types and no constraints or defaults
            # (a copied id default would draw from the real table's sequence).
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
                f"SELECT {names} FROM {table.name} WITH NO DATA"
            )
            cur.execute(f"TRUNCATE {staging}")
            with cur.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} "
                "ON CONFLICT (model, request_id) DO NOTHING"
            )
            return max(int(cur.rowcount), 0)
    raise NotImplementedError(f"mqm's own tables need SQLite or PostgreSQL, not {dialect}")


def _log_rows(
    model: str, records: Iterable[LogRecord], sqlite: bool
) -> Iterator[tuple[Any, ...]]:
    """Records as rows in ``_LOG_COLUMNS`` order, JSON encoded, times in the column's form."""
    stamp: Any = _sqlite_time if sqlite else _naive_utc
    received = stamp(datetime.now(UTC))
    for rec in records:
        yield (
            model, rec.model_version, rec.request_id, stamp(rec.ts), _dumps(rec.features),
            None if rec.prediction is None else _dumps(rec.prediction),
            None if rec.probabilities is None else _dumps(rec.probabilities),
            rec.latency_ms, rec.error, rec.error_message, received, rec.fallback_reason,
        )


def _label_rows(
    model: str, labels: Iterable[tuple[str, Any, datetime]], sqlite: bool
) -> Iterator[tuple[Any, ...]]:
    stamp: Any = _sqlite_time if sqlite else _naive_utc
    received = stamp(datetime.now(UTC))
    for rid, label, ts in labels:
        yield model, rid, _dumps(label), stamp(ts), received


def insert_logs(
    conn: sa.Connection, model: str, records: Iterable[LogRecord], *, batch: int = 5000
) -> int:
    """Insert records, skipping request ids already stored for the model; return rows added."""
    return _insert(conn, inference_logs, _LOG_COLUMNS,
                   _log_rows(model, records, conn.dialect.name == "sqlite"), batch)


def insert_labels(
    conn: sa.Connection,
    model: str,
    labels: Iterable[tuple[str, Any, datetime]],
    *,
    batch: int = 5000,
) -> int:
    """Insert (request_id, label, time) rows; a label already stored is kept, not replaced."""
    return _insert(conn, ground_truth, _LABEL_COLUMNS,
                   _label_rows(model, labels, conn.dialect.name == "sqlite"), batch)


def _insert(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...],
            rows: Iterable[tuple[Any, ...]], batch: int) -> int:
    added = 0
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            added += _bulk_insert_ignoring_duplicates(conn, table, columns, chunk)
            chunk = []
    added += _bulk_insert_ignoring_duplicates(conn, table, columns, chunk)
    return added


# --- loads: a file's rows staged apart, published at once ------------------------------


class LogLoad:
    """The log rows of one load (see ``monitor.store.staging``): ``add`` stages them,
    ``publish`` makes them visible in one short transaction."""

    def __init__(self, stage: StagedLoad | DirectLoad, model: str) -> None:
        self._stage = stage
        self.model = model

    def add(self, records: Iterable[LogRecord]) -> int:
        """Stage records, a bounded batch per transaction; return how many."""
        if isinstance(self._stage, DirectLoad):
            raise TypeError("a direct load takes rows encoded by add_arrow only")
        return self._stage.add(_log_rows(self.model, records, self._stage.sqlite))

    def add_arrow(self, rows: Encoded, *, text: Any = None) -> int:
        """Stage rows checked and encoded by ``monitor.store.arrow_logs``, in one
        transaction; return how many. ``text``: on PostgreSQL, the rows' ``copy_text``
        made already (on another thread)."""
        from monitor.store.arrow_logs import copy_text, sqlite_rows

        if not len(rows):
            return 0
        if isinstance(self._stage, StagedLoad) and self._stage.sqlite:
            return self._stage.add_many(sqlite_rows(rows, self.model), len(rows))
        if text is None:
            text = copy_text(rows, self.model)
        return self._stage.add_copy(text, len(rows))

    def publish(self, *, checked: bool = False) -> int:
        """Store the staged records, skipping request ids already stored; return rows added.
        ``checked``: the rows staged are those ``stored_request_ids`` did not find."""
        return self._stage.publish(checked=checked)

    def publish_ids(self, *, checked: bool = False) -> Sequence[int]:
        """``publish``, returning the ids of the rows added, ascending (with every row
        added, in the order staged)."""
        return self._stage.publish_ids(checked=checked)


class LabelLoad:
    """The labels of one load: ``add``, then ``unmatched`` and ``publish``."""

    def __init__(self, stage: StagedLoad, model: str) -> None:
        self._stage = stage
        self.model = model

    def add(self, labels: Iterable[tuple[str, Any, datetime]]) -> int:
        """Stage (request_id, label, time) rows; return how many."""
        return self._stage.add(_label_rows(self.model, labels, self._stage.sqlite))

    def unmatched(self) -> int:
        """How many staged labels name a request id that no stored log of the model has."""
        if not self._stage.staged:
            return 0
        return self._stage.count(
            "SELECT count(*) FROM {staged} AS s WHERE NOT EXISTS (SELECT 1 FROM "
            "inference_logs AS l WHERE l.model = s.model AND l.request_id = s.request_id)")

    def publish(self) -> int:
        """Store the staged labels; a label already stored is kept, not replaced."""
        return self._stage.publish()


_BYTE_ORDER: dict[str, bool] = {}


def _byte_order(engine: sa.Engine, raw: Any) -> bool:
    """Whether the PostgreSQL database orders text by its bytes (collation C or POSIX),
    as Python orders ``str`` (UTF-8 keeps code point order); asked once per database."""
    key = engine.url.render_as_string(hide_password=True)
    if key not in _BYTE_ORDER:
        collation = _column(raw, "SELECT datcollate FROM pg_database "
                            "WHERE datname = current_database()", ())
        _BYTE_ORDER[key] = bool(collation) and (
            collation[0] in ("C", "POSIX") or str(collation[0]).lower().startswith("c."))
    return _BYTE_ORDER[key]


def stored_request_ids(engine: sa.Engine, model: str, request_ids: list[str]) -> list[str]:
    """Request ids of the model stored already, among them all of ``request_ids`` that
    are (and possibly others): a reload skips them before it encodes or stages anything.

    First one scan of the index between the batch's smallest and largest id, if that
    range holds at most twice as many stored ids (a file of ids in order, loaded
    again); else one index probe per id. A probe costs several times a step of the scan.
    """
    if not request_ids:
        return []
    import orjson  # the ids travel as one JSON array, parsed by the database

    ids = orjson.dumps(request_ids).decode()
    limit = 2 * len(request_ids) + 1
    try:
        with engine.connect() as conn:
            raw = driver_connection(conn)
            try:
                if conn.dialect.name == "sqlite":
                    # SQLite orders text by its UTF-8 bytes, as Python orders code points.
                    found = _column(raw, "SELECT request_id FROM inference_logs WHERE model = ? "
                                    "AND request_id BETWEEN ? AND ? ORDER BY request_id LIMIT ?",
                                    (model, min(request_ids), max(request_ids), limit))
                    if len(found) < limit:
                        return found
                    return _column(raw, "SELECT request_id FROM inference_logs WHERE model = ? "
                                   "AND request_id IN (SELECT value FROM json_each(?))",
                                   (model, ids))
                # The range in the database's own collation, read in index order so that
                # the LIMIT stops the scan; then an array, not a join, so that the
                # planner probes the index instead of scanning the model.
                if _byte_order(engine, raw):  # the database orders text as Python does
                    low, high = min(request_ids), max(request_ids)
                else:
                    cur = raw.cursor()
                    try:
                        cur.execute("SELECT min(i), max(i) FROM "
                                    "json_array_elements_text(%s::json) AS i", (ids,))
                        low, high = cur.fetchone()
                    finally:
                        cur.close()
                found = _column(raw, "SELECT request_id FROM inference_logs WHERE model = %s "
                                "AND request_id >= %s AND request_id <= %s ORDER BY request_id "
                                "LIMIT %s", (model, low, high, limit))
                if len(found) < limit:
                    return found
                return _column(raw, "SELECT request_id FROM inference_logs WHERE model = %s AND "
                               "request_id = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))",
                               (model, ids))
            finally:
                conn.rollback()
    except (sa.exc.DBAPIError, engine.dialect.loaded_dbapi.Error) as exc:
        raise DatabaseError(f"cannot read the stored request ids: {first_line(exc)}") from None


def _column(raw: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
    cur = raw.cursor()
    try:
        cur.execute(sql, params)
        return [row[0] for row in cur.fetchall()]
    finally:
        cur.close()


def insert_log_batch(engine: sa.Engine, model: str, rows: Encoded) -> int:
    """One batch of rows checked and encoded by ``monitor.store.arrow_logs`` (an HTTP
    batch: small), stored in one short transaction, skipping request ids already stored;
    return rows added. What ``log_load`` does for a batch, without a staging table made and
    dropped per batch (on PostgreSQL, catalog work that cost more than the rows).

    PostgreSQL: a plain COPY into the table first; a stored id makes it roll back to a
    COPY into a temporary table (dropped at commit) and INSERT ... ON CONFLICT DO NOTHING.
    SQLite: one executemany of INSERT OR IGNORE."""
    from monitor.store.arrow_logs import copy_text, sqlite_rows
    from monitor.store.staging import database_error

    if not len(rows):
        return 0
    names = ", ".join(_LOG_COLUMNS)
    sqlite = engine.dialect.name == "sqlite"
    # SQLite: the tuples made before the write lock is taken, to hold it the shortest time.
    tuples = list(sqlite_rows(rows, model)) if sqlite else []
    with engine.connect() as conn:
        dbapi = conn.dialect.loaded_dbapi
        try:
            with conn.begin():
                raw = driver_connection(conn)
                if sqlite:
                    before = raw.total_changes
                    marks = ", ".join("?" * len(_LOG_COLUMNS))
                    raw.executemany(f"INSERT OR IGNORE INTO inference_logs ({names}) "
                                    f"VALUES ({marks})", tuples)
                    return int(raw.total_changes - before)
                from psycopg.errors import UniqueViolation

                data = copy_text(rows, model)
                with raw.cursor() as cur:
                    cur.execute("SAVEPOINT mqm_batch")
                    try:
                        with cur.copy(f"COPY inference_logs ({names}) FROM STDIN") as copy:
                            copy.write(data)
                    except UniqueViolation:
                        cur.execute("ROLLBACK TO SAVEPOINT mqm_batch")
                    else:
                        cur.execute("RELEASE SAVEPOINT mqm_batch")
                        return len(rows)
                    cur.execute(f"CREATE TEMP TABLE mqm_batch_logs ON COMMIT DROP AS "
                                f"SELECT {names} FROM inference_logs LIMIT 0")
                    with cur.copy(f"COPY mqm_batch_logs ({names}) FROM STDIN") as copy:
                        copy.write(data)
                    cur.execute(f"INSERT INTO inference_logs ({names}) SELECT {names} FROM "
                                "mqm_batch_logs ON CONFLICT (model, request_id) DO NOTHING")
                    return max(int(cur.rowcount), 0)
        except dbapi.Error as exc:
            raise database_error(conn, exc) from exc
        except sa.exc.DBAPIError as exc:
            raise database_error(conn, exc.orig or exc) from exc


@contextmanager
def log_load(engine: sa.Engine, model: str, *, direct: bool = False) -> Iterator[LogLoad]:
    """A load of log records for ``model``; what is not published by the end is dropped.
    ``direct`` (PostgreSQL, rows added by ``add_arrow`` only, published ``checked``): the
    rows are copied straight into the table in one transaction (``DirectLoad``)."""
    if direct and engine.dialect.name == "postgresql":
        with direct_load(engine, inference_logs, _LOG_COLUMNS) as load:
            yield LogLoad(load, model)
        return
    with staged_load(engine, inference_logs, _LOG_COLUMNS) as stage:
        yield LogLoad(stage, model)


@contextmanager
def label_load(engine: sa.Engine, model: str) -> Iterator[LabelLoad]:
    """A load of labels for ``model``; what is not published by the end is dropped."""
    with staged_load(engine, ground_truth, _LABEL_COLUMNS) as stage:
        yield LabelLoad(stage, model)
