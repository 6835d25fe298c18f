"""Writing inference logs and ground-truth labels, and counting fallback answers.

Stdlib and SQLAlchemy only: the serving-side ``InferenceLogger`` calls this from its
background thread, where pandas must not be loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from monitor.errors import RowProblem
from monitor.store.db import driver_connection
from monitor.store.tables import ground_truth, inference_logs
from monitor.times import parse_time, utc

__all__ = [
    "LogRecord",
    "RowProblem",
    "clean_value",
    "insert_labels",
    "insert_logs",
    "make_record",
    "parse_time",
    "request_id_of",
]


# Column sizes of the tables; checked per row so that one long value is one bad row,
# not a failed batch.
MAX_ID_LENGTH = 200
MAX_VERSION_LENGTH = 100
MAX_FALLBACK_REASON_LENGTH = 40


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
_PLAIN = frozenset({str, int, bool, type(None)})


def clean_value(field: str, value: Any) -> Any:
    """A JSON-ready value: NaN becomes null, infinity is refused, numpy scalars unboxed."""
    kind = type(value)
    if kind in _PLAIN:  # the common case, checked first: this runs for every value
        return value
    if kind is float:
        if value != value:  # NaN
            return None
        if value in _INFINITIES:
            raise RowProblem(field, f"value is {value}; only finite numbers can be stored")
        return value
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise RowProblem(field, f"value is {value}; only finite numbers can be stored")
        return float(value)
    if isinstance(value, datetime):
        return utc(value).isoformat()
    item = getattr(value, "item", None)  # numpy / pandas scalars, without importing them
    if callable(item) and not isinstance(value, list | tuple | dict):
        try:
            return clean_value(field, item())
        except (TypeError, ValueError) as exc:
            if isinstance(exc, RowProblem):
                raise
    if value.__class__.__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, list | tuple):
        return [clean_value(field, v) for v in value]
    if isinstance(value, dict):
        return {str(k): clean_value(f"{field}.{k}", v) for k, v in value.items()}
    raise RowProblem(field, f"cannot store a value of type {type(value).__name__}")


def request_id_of(value: Any) -> str:
    """A request id as text; 12.0 (an id column that passed through floats) reads as 12."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RowProblem("request_id", "is missing")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    rid = str(value).strip()
    if not rid:
        raise RowProblem("request_id", "is missing")
    if len(rid) > MAX_ID_LENGTH:
        raise RowProblem("request_id", f"is longer than {MAX_ID_LENGTH} characters")
    if "\x00" in rid:
        raise RowProblem("request_id", "contains a NUL character, which databases cannot store")
    return rid


def make_record(fields: Mapping[str, Any], *, default_version: str | None = None) -> LogRecord:
    """Validate one log entry's fields into a record; raise ``RowProblem`` on the first bad one."""
    rid = request_id_of(fields.get("request_id"))
    features = fields.get("features")
    if isinstance(features, str):
        try:
            features = json.loads(features)
        except json.JSONDecodeError as exc:
            raise RowProblem("features", f"is not valid JSON ({exc.msg})") from None
    if not isinstance(features, Mapping):
        raise RowProblem("features", "must be an object of feature name -> value")
    error = fields.get("error")
    error = bool(clean_value("error", error)) if error is not None else False
    fallback = fields.get("fallback_reason")
    fallback = None if clean_value("fallback_reason", fallback) is None else str(fallback).strip()
    if fallback is not None and len(fallback) > MAX_FALLBACK_REASON_LENGTH:
        raise RowProblem("fallback_reason",
                         f"is longer than {MAX_FALLBACK_REASON_LENGTH} characters")
    prediction = clean_value("prediction", fields.get("prediction"))
    # A fallback answer is the configured default prediction, which may be null.
    if prediction is None and not error and not fallback:
        raise RowProblem("prediction", "is missing (only error and fallback rows may lack a "
                         "prediction)")
    probabilities = fields.get("probabilities")
    if probabilities is not None:
        if not isinstance(probabilities, Mapping):
            raise RowProblem("probabilities", "must be an object of class -> probability")
        probabilities = {str(k): clean_value(f"probabilities.{k}", v)
                         for k, v in probabilities.items()}
        if any(v is not None and not isinstance(v, int | float) for v in probabilities.values()):
            raise RowProblem("probabilities", "values must be numbers")
        if all(v is None for v in probabilities.values()):
            probabilities = None
    latency = clean_value("latency_ms", fields.get("latency_ms"))
    if latency is not None:
        if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
            raise RowProblem("latency_ms", f"must be a number >= 0, got {latency!r}")
        latency = float(latency)
    message = fields.get("error_message")
    message = None if clean_value("error_message", message) is None else str(message)
    version = fields.get("model_version")
    version = default_version if clean_value("model_version", version) is None else str(version)
    for name, text in (("request_id", rid), ("model_version", version), ("error_message", message),
                       ("fallback_reason", fallback)):
        if text is not None and "\x00" in text:
            raise RowProblem(name, "contains a NUL character, which databases cannot store")
    if version is not None and len(version) > MAX_VERSION_LENGTH:
        raise RowProblem("model_version", f"is longer than {MAX_VERSION_LENGTH} characters")
    return LogRecord(
        request_id=rid,
        ts=parse_time("timestamp", fields.get("timestamp")),
        features={str(k): clean_value(str(k), v) for k, v in features.items()},
        prediction=prediction,
        probabilities=probabilities,
        latency_ms=latency,
        error=error,
        error_message=message,
        model_version=version,
        fallback_reason=fallback or None,
    )


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


def insert_logs(
    conn: sa.Connection, model: str, records: Iterable[LogRecord], *, batch: int = 5000
) -> int:
    """Insert records, skipping request ids already stored for the model; return rows added."""
    sqlite = conn.dialect.name == "sqlite"
    now = datetime.now(UTC)
    stamp: Any = _sqlite_time if sqlite else _naive_utc
    received = stamp(now)
    added = 0
    chunk: list[tuple[Any, ...]] = []
    for rec in records:
        chunk.append((
            model, rec.model_version, rec.request_id, stamp(rec.ts), _dumps(rec.features),
            None if rec.prediction is None else _dumps(rec.prediction),
            None if rec.probabilities is None else _dumps(rec.probabilities),
            rec.latency_ms, rec.error, rec.error_message, received, rec.fallback_reason,
        ))
        if len(chunk) >= batch:
            added += _bulk_insert_ignoring_duplicates(conn, inference_logs, _LOG_COLUMNS, chunk)
            chunk = []
    added += _bulk_insert_ignoring_duplicates(conn, inference_logs, _LOG_COLUMNS, chunk)
    return added


def insert_labels(
    conn: sa.Connection,
    model: str,
    labels: Iterable[tuple[str, Any, datetime]],
    *,
    batch: int = 5000,
) -> int:
    """Insert (request_id, label, time) rows; a label already stored is kept, not replaced."""
    stamp: Any = _sqlite_time if conn.dialect.name == "sqlite" else _naive_utc
    received = stamp(datetime.now(UTC))
    added = 0
    chunk: list[tuple[Any, ...]] = []
    for rid, label, ts in labels:
        chunk.append((model, rid, _dumps(label), stamp(ts), received))
        if len(chunk) >= batch:
            added += _bulk_insert_ignoring_duplicates(conn, ground_truth, _LABEL_COLUMNS, chunk)
            chunk = []
    added += _bulk_insert_ignoring_duplicates(conn, ground_truth, _LABEL_COLUMNS, chunk)
    return added
