"""Loading inference-log and label files (CSV, Parquet, JSON lines) into the store.

A file is read row by row (``monitor.ingest_files``) and checked; every bad row is
reported with its line or row number and field: a value that cannot be stored, bytes
that are not UTF-8, a CSV row with an extra cell, a JSON line that is not an object.
With ``on_error="fail"`` (the default) one bad row, or a file without rows, means
nothing is written; with ``"skip"`` the good rows are written and the bad ones reported.
A file that cannot be read to its end (a truncated ``.gz``) writes nothing either way.

Rows are staged apart and published at the end in one short transaction
(``monitor.store.staging``): a load is all or nothing, and the store stays writable
while a long file is read. Request ids already stored are skipped, so loading the
same file twice adds nothing.

A Parquet file of plain columns takes a fast path first (``monitor.ingest_fast``,
``monitor.store.arrow_logs``): whole columns checked and encoded in Arrow, stored ids
looked up a batch at a time before anything is encoded. So do JSON lines, files and HTTP
batches, parsed by Arrow (``monitor.store.json_logs``). Any file or batch it cannot vouch
for is read row by row from the start, so the report of a bad one is the row path's.
A chunk of a JSON-lines file whose request ids, read first without parsing its lines
(``line_ids``), are all stored is not parsed at all: a file loaded again costs about a
read of it, and a line whose id is stored counts as stored whatever it holds past its id
(the row path, which reads it, would report such a line if it were bad).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from monitor.errors import DatabaseError, IngestError, shown
from monitor.ingest_files import BadRow, Row, _json_lines, read_rows
from monitor.schema import ModelSchema, parse_text
from monitor.store.arrow_logs import NotFast
from monitor.store.db import Engine
from monitor.store.logs import (
    LogRecord,
    RowProblem,
    clean_value,
    label_load,
    log_load,
    make_record,
    record_time,
    request_id_of,
)

__all__ = ["BadRow", "IngestReport", "ingest_label_batch", "ingest_labels", "ingest_log_batch",
           "ingest_logs", "read_rows"]

OnError = Literal["skip", "fail"]
RESERVED = ("request_id", "timestamp", "model_version", "latency_ms", "error", "error_message",
            "fallback_reason")
_MAX_LISTED = 20
_log = logging.getLogger("mqm.ingest")


@dataclass
class IngestReport:
    """What a load did: rows read, added, already stored, the bad rows, and warnings
    (an empty file under ``skip``, labels whose request id matches no log)."""

    file: str
    rows: int = 0
    added: int = 0
    already_stored: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Labels only: how many of the file's labels name a request id no stored log has.
    unmatched: int | None = None

    @property
    def bad(self) -> int:
        return len(self.problems)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file": self.file,
            "rows": self.rows,
            "added": self.added,
            "already_stored": self.already_stored,
            "bad_rows": self.bad,
            "problems": self.problems[:_MAX_LISTED],
            "warnings": self.warnings,
        }
        if self.unmatched is not None:
            data["unmatched"] = self.unmatched
        return data


# --- rows to records ----------------------------------------------------------------------


def _log_record(
    row: dict[str, Any], schema: ModelSchema, as_text: bool, version: str | None
) -> LogRecord:
    pred = schema.prediction
    proba_cols = pred.probability_columns if pred is not None else {}
    fields: dict[str, Any] = {k: row.get(k) for k in RESERVED}
    if as_text:
        for name, kind in (("latency_ms", "float"), ("error", "bool")):
            if isinstance(fields[name], str):
                fields[name] = parse_text(fields[name], kind)
    if pred is None:
        # A features-only model (task: features): no prediction is stored (null), and
        # every column that is not reserved is a feature, as the contract then judges.
        fields["prediction"] = None
    else:
        # JSON lines (the HTTP client's) may name the prediction ``prediction`` whatever
        # the contract calls it: a row that lacked the contract's column was refused before.
        raw_pred = (row.get(pred.column) if pred.column in row or as_text
                    else row.get("prediction"))
        fields["prediction"] = parse_text(raw_pred, pred.type) if as_text and isinstance(
            raw_pred, str) else raw_pred
    if pred is not None and isinstance(row.get("probabilities"), dict):
        # One object of class -> probability, as stored (the HTTP client sends this).
        fields["probabilities"] = row["probabilities"]
    elif proba_cols:
        probs = {}
        for cls, col in proba_cols.items():
            value = row.get(col)
            if as_text and isinstance(value, str):
                value = parse_text(value, "float")
            probs[cls] = value
        fields["probabilities"] = probs
    if "features" in row and row["features"] is not None:
        fields["features"] = row["features"]
    else:
        skip = {*RESERVED, *proba_cols.values(), "probabilities", "features"}
        if pred is not None:
            skip.add(pred.column)
            if pred.column not in row:
                skip.add("prediction")  # taken as the prediction above
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
    return make_record(fields, default_version=version, require_prediction=pred is not None)


def _check_columns(path: Path, columns: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise IngestError(f"{path}: missing required column {names}; the file has: "
                          f"{', '.join(columns) or 'no columns'}")


T = TypeVar("T")


def _valid_rows(
    rows: Iterator[tuple[str, Row]],
    report: IngestReport,
    parse: Callable[[dict[str, Any]], T],
    request_id: Callable[[T], str],
) -> Iterator[T]:
    """Parsed rows; bad ones and repeated request ids go to the report instead."""
    seen: dict[str, str] = {}
    for where, row in rows:
        report.rows += 1
        if isinstance(row, BadRow):
            report.problems.append(f"{where}: {row.message}")
            continue
        try:
            item = parse(row)
        except RowProblem as exc:
            report.problems.append(f"{where}: {exc}")
            continue
        except Exception as exc:  # hostile input must be a bad row, never a traceback
            report.problems.append(f"{where}: cannot be read ({type(exc).__name__}: "
                                   f"{shown(str(exc), 120)})")
            continue
        rid = request_id(item)
        if rid in seen:
            report.problems.append(f"{where}: field 'request_id': {rid!r} repeats {seen[rid]}")
            continue
        seen[rid] = where
        yield item


def _finish(report: IngestReport, on_error: OnError, what: str) -> None:
    """Raise (so that nothing is published) on bad rows or an empty file under ``fail``."""
    if report.problems and on_error == "fail":
        shown_ = "; ".join(report.problems[:5])
        more = f" (and {report.bad - 5} more)" if report.bad > 5 else ""
        raise IngestError(
            f"{report.file}: {report.bad} bad {what} row(s), nothing was written: {shown_}{more}",
            report.problems,
        )
    if report.rows == 0:
        empty = f"{report.file}: no {what} rows (the file is empty or holds only a header)"
        if on_error == "fail":
            raise IngestError(f"{empty}; nothing was written (--on-error skip accepts it)")
        report.warnings.append(empty)


def _database_problem(path: Path, exc: DatabaseError) -> IngestError:
    return IngestError(f"{path}: {exc}; nothing was written, load the file again")


def ingest_logs(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    path: str | Path,
    *,
    on_error: OnError = "fail",
    default_version: str | None = None,
    fast: bool = True,
    blocks: bool = False,
) -> IngestReport:
    """Load an inference-log file for ``model``: all of it (or its good rows under
    ``skip``), published at once, or nothing.

    A Parquet or JSON-lines file of plain columns takes a fast path (whole columns
    checked at once);
    any file it cannot vouch for is read row by row, which reports each bad row, with
    the same result. ``fast=False`` reads row by row always (tests compare the two).

    ``blocks`` (a model whose logs are compacted): on the fast path, the rows' log
    blocks are written from the columns already in memory once the load is stored, so
    that the first check need not wait for compaction. Writing them never fails the
    load (compaction catches up).
    """
    path = Path(path)
    columns, rows, as_text = read_rows(path)
    if columns:
        _check_columns(path, columns, ["request_id", "timestamp",
                                       *([] if schema.prediction is None
                                         else [schema.prediction.column])])
    if fast:
        try:
            from monitor.ingest_fast import fast_logs

            return fast_logs(engine, model, schema, path, default_version, blocks)
        except NotFast as exc:
            _log.debug("%s: read row by row (%s)", path, exc)
        except DatabaseError as exc:
            raise _database_problem(path, exc) from None
        # ``rows`` is a generator not started yet: the fast path read the file on its own.
    try:
        return _load_logs(engine, model, schema, IngestReport(file=str(path)), rows, as_text,
                          on_error, default_version)
    except DatabaseError as exc:
        raise _database_problem(path, exc) from None


def ingest_labels(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    path: str | Path,
    *,
    on_error: OnError = "fail",
    now: datetime | None = None,
) -> IngestReport:
    """Load ground-truth labels (``request_id``, the target column, optional ``timestamp``).

    ``unmatched`` counts the file's labels whose request id matches no stored log of the
    model (a warning says so): they are stored, and join if those logs are loaded later.
    """
    path = Path(path)
    _refuse_labels_of_features_only(path, model, schema)
    columns, rows, as_text = read_rows(path)
    label_col = _label_column(schema, columns)
    if columns:
        _check_columns(path, columns, ["request_id", label_col])
    try:
        return _load_labels(engine, model, schema, IngestReport(file=str(path)), rows, as_text,
                            on_error, now, label_col, bool(columns))
    except DatabaseError as exc:
        raise _database_problem(path, exc) from None


# --- batches: JSON lines sent over HTTP ------------------------------------------------------


def ingest_log_batch(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    body: bytes,
    *,
    source: str = "batch",
    on_error: OnError = "skip",
    default_version: str | None = None,
    fast: bool = True,
) -> IngestReport:
    """Load one batch of inference logs, JSON lines as a log file holds them (``body``,
    already uncompressed): the same row rules, the same report per bad row, the same
    idempotence on ``request_id`` as ``ingest_logs``. ``source`` names the batch in
    messages. Raises ``IngestError`` (under ``fail``, a bad row or no rows) or
    ``DatabaseError``; nothing is written then.

    A batch whose lines Arrow reads as the row path would takes a fast path
    (``monitor.ingest_fast``); any other is read row by row, with the same result.
    ``fast=False`` reads row by row always (tests compare the two)."""
    if fast:
        try:
            from monitor.ingest_fast import fast_log_batch

            return fast_log_batch(engine, model, schema, body, source, default_version)
        except NotFast as exc:
            _log.debug("%s: read row by row (%s)", source, exc)
        except DatabaseError:
            raise
        except Exception as exc:  # hostile input must get the row path's answer, never a 500
            _log.warning("%s: the fast path failed, read row by row (%s: %s)", source,
                         type(exc).__name__, shown(str(exc), 200))
    return _load_logs(engine, model, schema, IngestReport(file=source), _body_rows(body),
                      False, on_error, default_version)


def ingest_label_batch(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    body: bytes,
    *,
    source: str = "batch",
    on_error: OnError = "skip",
    now: datetime | None = None,
) -> IngestReport:
    """Load one batch of labels, JSON lines as a label file holds them; as
    ``ingest_log_batch``, with ``ingest_labels``' rules."""
    _refuse_labels_of_features_only(source, model, schema)
    return _load_labels(engine, model, schema, IngestReport(file=source), _body_rows(body),
                        False, on_error, now, _label_column(schema, None), False)


def _body_rows(body: bytes) -> Iterator[tuple[str, Row]]:
    """The rows of a JSON-lines body, decoded as a file is (UTF-8 with or without a BOM;
    bytes that are not UTF-8 reported in their row's field)."""
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", errors="surrogateescape",
                            newline="")
    return _json_lines(text)


# --- the load, whatever the rows came from ---------------------------------------------------


def _refuse_labels_of_features_only(source: str | Path, model: str, schema: ModelSchema) -> None:
    if schema.features_only:
        raise IngestError(f"{source}: model {model!r} is monitored on its features alone (its "
                          "contract declares task: features, no prediction): labels have no "
                          "prediction to be compared with; nothing was written")


def _label_column(schema: ModelSchema, columns: list[str] | None) -> str:
    """The column holding the label: the contract's target, else ``label`` when the file
    has that and not the target. Rows of JSON lines (no header) use the target."""
    target = schema.target.column if schema.target else "label"
    if columns and target not in columns and "label" in columns:
        return "label"
    return target


def _load_logs(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    report: IngestReport,
    rows: Iterator[tuple[str, Row]],
    as_text: bool,
    on_error: OnError,
    default_version: str | None,
) -> IngestReport:
    records = _valid_rows(
        rows, report, lambda row: _log_record(row, schema, as_text, default_version),
        lambda rec: rec.request_id,
    )
    with log_load(engine, model) as load:
        load.add(records)
        _finish(report, on_error, "log")  # raising here drops what was staged
        report.added = load.publish()
    report.already_stored = report.rows - report.bad - report.added
    return report


def _load_labels(
    engine: Engine,
    model: str,
    schema: ModelSchema,
    report: IngestReport,
    rows: Iterator[tuple[str, Row]],
    as_text: bool,
    on_error: OnError,
    now: datetime | None,
    label_col: str,
    columns_known: bool,
) -> IngestReport:
    target_type = schema.target.type if schema.target else "string"
    arrived = now or datetime.now(UTC)
    json_rows = columns_known is False

    def label_of(row: dict[str, Any]) -> tuple[str, Any, datetime]:
        rid = request_id_of(row.get("request_id"))
        # A JSON line (no header to choose by) may name its label ``label``.
        label = row.get(label_col if label_col in row or not json_rows else "label")
        if as_text and isinstance(label, str):
            label = parse_text(label, target_type)
        label = clean_value(label_col, label)
        if label is None:
            raise RowProblem(label_col, "is missing")
        ts = row.get("timestamp")
        return rid, label, arrived if ts is None else record_time("timestamp", ts)

    labels = _valid_rows(rows, report, label_of, lambda item: item[0])
    with label_load(engine, model) as load:
        staged = load.add(labels)
        _finish(report, on_error, "label")
        report.unmatched = load.unmatched()
        report.added = load.publish()
    report.already_stored = report.rows - report.bad - report.added
    if report.unmatched:
        report.warnings.append(
            f"{report.unmatched:,} of {staged:,} labels match no logged request of model "
            f"{model!r}; they are stored, and join if those logs are loaded later")
    return report
