"""Loading inference-log and label files (CSV, Parquet, JSON lines) into the store.

A file is checked row by row; every bad row is reported with its line or row
number and field. With ``on_error="fail"`` (the default) one bad row means nothing
is written; with ``"skip"`` the good rows are written and the bad ones reported.
Either way the write is one transaction, and request ids already stored are
skipped, so loading the same file twice adds nothing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from monitor.errors import IngestError
from monitor.schema import ModelSchema, parse_text
from monitor.store.db import Engine
from monitor.store.logs import (
    LogRecord,
    RowProblem,
    clean_value,
    insert_labels,
    insert_logs,
    make_record,
    parse_time,
    request_id_of,
)

__all__ = ["IngestReport", "ingest_labels", "ingest_logs", "read_rows"]

OnError = Literal["skip", "fail"]
RESERVED = ("request_id", "timestamp", "model_version", "latency_ms", "error", "error_message",
            "fallback_reason")
_CSV_NULLS = {"", "null", "NULL", "None", "NaN", "nan"}
_MAX_LISTED = 20


@dataclass
class IngestReport:
    """What a load did: rows read, added, already stored, and the bad rows."""

    file: str
    rows: int = 0
    added: int = 0
    already_stored: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return len(self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "added": self.added,
            "already_stored": self.already_stored,
            "bad_rows": self.bad,
            "problems": self.problems[:_MAX_LISTED],
        }


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last == ".csv":
        return "csv"
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise IngestError(f"{path}: unknown file type; use .csv, .parquet or .jsonl (optionally .gz)")


def read_rows(path: Path) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]], bool]:
    """Columns, an iterator of (where, row) pairs, and whether values arrived as text (CSV).

    ``where`` is "line N" for text files and "row N" for Parquet, for messages.
    """
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    kind = _kind(path)
    try:
        if kind == "csv":
            import csv

            with _open_text(path) as head:
                columns = next(csv.reader(head), [])

            def csv_rows() -> Iterator[tuple[str, dict[str, Any]]]:
                # Opened here, not above, so that a file rejected before its rows are
                # read is never left open.
                with _open_text(path) as handle:
                    reader = csv.DictReader(handle)
                    for i, row in enumerate(reader):
                        if None in row:  # more cells than header columns
                            raise IngestError(
                                f"{path}: line {i + 2}: {len(row) - 1 + len(row[None])} cells, "
                                f"the header has {len(columns)}"
                            )
                        yield f"line {i + 2}", {
                            k: (None if v is None or v in _CSV_NULLS else v)
                            for k, v in row.items()
                        }

            return columns, csv_rows(), True
        if kind == "parquet":
            import pyarrow.parquet as pq

            pfile = pq.ParquetFile(path)
            columns = pfile.schema_arrow.names

            def parquet_rows() -> Iterator[tuple[str, dict[str, Any]]]:
                import pyarrow as pa

                n = 0
                for batch in pfile.iter_batches(batch_size=20_000):
                    # Zoned times become naive UTC: Arrow stores them as UTC already, and
                    # a pytz zone object per row cost more than the database insert.
                    for i, fld in enumerate(batch.schema):
                        if pa.types.is_timestamp(fld.type) and fld.type.tz is not None:
                            batch = batch.set_column(
                                i, fld.name, batch.column(i).cast(pa.timestamp(fld.type.unit)))
                    for row in batch.to_pylist():
                        n += 1
                        yield f"row {n}", row

            return columns, parquet_rows(), False
        # Lines may differ in their keys: missing fields are reported per line.
        columns = []

        def json_rows() -> Iterator[tuple[str, dict[str, Any]]]:
            with _open_text(path) as handle:
                for number, text in enumerate(handle, start=1):
                    if text.strip():
                        yield f"line {number}", _json_line(path, number, text)

        return columns, json_rows(), False
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: cannot read: {exc}") from None
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        if isinstance(exc, IngestError):
            raise
        raise IngestError(f"{path}: cannot read as {kind}: {exc}") from None


def _json_line(path: Path, number: int, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise IngestError(f"{path}: line {number}: expected a JSON object")
    return value


def _log_record(
    row: dict[str, Any], schema: ModelSchema, as_text: bool, version: str | None
) -> LogRecord:
    pred = schema.prediction
    proba_cols = pred.probability_columns
    fields: dict[str, Any] = {k: row.get(k) for k in RESERVED}
    if as_text:
        for name, kind in (("latency_ms", "float"), ("error", "bool")):
            if isinstance(fields[name], str):
                fields[name] = parse_text(fields[name], kind)
    raw_pred = row.get(pred.column)
    fields["prediction"] = parse_text(raw_pred, pred.type) if as_text and isinstance(
        raw_pred, str) else raw_pred
    if proba_cols:
        probs = {}
        for cls, col in proba_cols.items():
            value = row.get(col)
            if as_text and isinstance(value, str):
                value = parse_text(value, "float")
            probs[cls] = value
        fields["probabilities"] = probs
    elif isinstance(row.get("probabilities"), dict):
        fields["probabilities"] = row["probabilities"]
    if "features" in row and row["features"] is not None:
        fields["features"] = row["features"]
    else:
        skip = {*RESERVED, pred.column, *proba_cols.values(), "probabilities", "features"}
        if schema.target is not None:
            skip.add(schema.target.column)
        types = {f.name: f.type for f in schema.features}
        feats = {}
        for key, value in row.items():
            if key in skip:
                continue
            if as_text and isinstance(value, str) and key in types:
                value = parse_text(value, types[key])
            feats[key] = value
        fields["features"] = feats
    return make_record(fields, default_version=version)


def _check_columns(path: Path, columns: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise IngestError(f"{path}: missing required column {names}; the file has: "
                          f"{', '.join(columns) or 'no columns'}")


T = TypeVar("T")


def _valid_rows(
    rows: Iterator[tuple[str, dict[str, Any]]],
    report: IngestReport,
    parse: Callable[[dict[str, Any]], T],
    request_id: Callable[[T], str],
) -> Iterator[T]:
    """Parsed rows; bad ones and repeated request ids go to the report instead."""
    seen: dict[str, str] = {}
    for where, row in rows:
        report.rows += 1
        try:
            item = parse(row)
        except RowProblem as exc:
            report.problems.append(f"{where}: {exc}")
            continue
        rid = request_id(item)
        if rid in seen:
            report.problems.append(f"{where}: field 'request_id': {rid!r} repeats {seen[rid]}")
            continue
        seen[rid] = where
        yield item


def _finish(report: IngestReport, on_error: OnError, what: str) -> None:
    if report.problems and on_error == "fail":
        shown = "; ".join(report.problems[:5])
        more = f" (and {report.bad - 5} more)" if report.bad > 5 else ""
        raise IngestError(
            f"{report.file}: {report.bad} bad {what} row(s), nothing was written: {shown}{more}",
            report.problems,
        )


def ingest_logs(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    path: str | Path,
    *,
    on_error: OnError = "fail",
    default_version: str | None = None,
) -> IngestReport:
    """Load an inference-log file for ``model`` in one transaction."""
    path = Path(path)
    columns, rows, as_text = read_rows(path)
    if columns:
        _check_columns(path, columns, ["request_id", "timestamp", schema.prediction.column])
    report = IngestReport(file=str(path))
    records = _valid_rows(
        rows, report, lambda row: _log_record(row, schema, as_text, default_version),
        lambda rec: rec.request_id,
    )
    with engine.begin() as conn:
        report.added = insert_logs(conn, model, records)
        report.already_stored = report.rows - report.bad - report.added
        # Raising inside the block rolls the whole load back.
        _finish(report, on_error, "log")
    return report


def ingest_labels(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    path: str | Path,
    *,
    on_error: OnError = "fail",
    now: datetime | None = None,
) -> IngestReport:
    """Load ground-truth labels (``request_id``, the target column, optional ``timestamp``)."""
    path = Path(path)
    columns, rows, as_text = read_rows(path)
    target = schema.target.column if schema.target else "label"
    target_type = schema.target.type if schema.target else "string"
    label_col = target if target in columns or "label" not in columns else "label"
    if columns:
        _check_columns(path, columns, ["request_id", label_col])
    arrived = now or datetime.now(UTC)
    report = IngestReport(file=str(path))

    def label_of(row: dict[str, Any]) -> tuple[str, Any, datetime]:
        rid = request_id_of(row.get("request_id"))
        label = row.get(label_col)
        if as_text and isinstance(label, str):
            label = parse_text(label, target_type)
        label = clean_value(label_col, label)
        if label is None:
            raise RowProblem(label_col, "is missing")
        ts = row.get("timestamp")
        return rid, label, arrived if ts is None else parse_time("timestamp", ts)

    labels = _valid_rows(rows, report, label_of, lambda item: item[0])
    with engine.begin() as conn:
        report.added = insert_labels(conn, model, labels)
        report.already_stored = report.rows - report.bad - report.added
        _finish(report, on_error, "label")
    return report
