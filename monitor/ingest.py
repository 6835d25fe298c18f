"""Loading inference-log and label files (CSV, Parquet, JSON lines) into the store.

A file is checked row by row; every bad row is reported with its line or row number
and field: a value that cannot be stored, bytes that are not UTF-8, a CSV row with
an extra cell, a JSON line that is not an object. With ``on_error="fail"`` (the
default) one bad row, or a file without rows, means nothing is written; with
``"skip"`` the good rows are written and the bad ones reported. A file that cannot be
read to its end (a truncated ``.gz``) writes nothing either way.

Rows are staged apart and published at the end in one short transaction
(``monitor.store.staging``): a load is all or nothing, and the store stays writable
while a long file is read. Request ids already stored are skipped, so loading the
same file twice adds nothing.

A Parquet file of plain columns takes a fast path first (``_fast_logs``,
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

import csv
import gzip
import io
import json
import logging
import queue
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, cast

from monitor.errors import DatabaseError, IngestError, shown
from monitor.schema import ModelSchema, parse_text
from monitor.store.arrow_logs import ArrowLogs, Encoded, LogLayout, NotFast, request_ids
from monitor.store.db import Engine
from monitor.store.logs import (
    MAX_DEPTH,
    LogRecord,
    RowProblem,
    clean_value,
    insert_log_batch,
    label_load,
    log_load,
    make_record,
    record_time,
    request_id_of,
    stored_request_ids,
)

if TYPE_CHECKING:
    from monitor.store.arrow_blocks import LoadedRows
    from monitor.store.blocks import Part

__all__ = ["BadRow", "IngestReport", "ingest_label_batch", "ingest_labels", "ingest_log_batch",
           "ingest_logs", "read_rows"]

OnError = Literal["skip", "fail"]
RESERVED = ("request_id", "timestamp", "model_version", "latency_ms", "error", "error_message",
            "fallback_reason")
_CSV_NULLS = {"", "null", "NULL", "None", "NaN", "nan"}
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


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read at all (its problem, without the line): the reader
    reports it and goes on with the next one."""

    message: str


Row = dict[str, Any] | BadRow


def _open_text(path: Path) -> IO[str]:
    """The file as text: UTF-8 with or without a byte-order mark, ``.gz`` or not.

    Bytes that are not UTF-8 do not stop the read: they come through as lone surrogates
    (``surrogateescape``), which ``clean_value`` refuses naming the field of their row.
    """
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")


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


_READ_ERRORS = (OSError, EOFError, zlib.error)


def _unreadable(path: Path, where: str, exc: BaseException) -> IngestError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, EOFError):
        reason += " (the file is truncated)"
    return IngestError(f"{path}: cannot read {where}: {reason}; nothing was written")


def read_rows(path: Path) -> tuple[list[str], Iterator[tuple[str, Row]], bool]:
    """Columns, an iterator of (where, row) pairs, and whether values arrived as text (CSV).

    ``where`` is "line N" for text files and "row N" for Parquet, for messages. A row
    that cannot be read comes as a ``BadRow``; a file that cannot be read on raises
    ``IngestError``, also while iterating.
    """
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    kind = _kind(path)
    try:
        if kind == "csv":
            return _csv_header(path), _csv_rows(path), True
        if kind == "parquet":
            import pyarrow.parquet as pq

            pfile = pq.ParquetFile(path)
            return pfile.schema_arrow.names, _parquet_rows(path, pfile), False
        # Lines may differ in their keys: missing fields are reported per line.
        return [], _json_rows(path), False
    except _READ_ERRORS as exc:
        raise _unreadable(path, "it", exc) from None
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        if isinstance(exc, IngestError):
            raise
        raise IngestError(f"{path}: cannot read as {kind}: {exc}") from None


# --- CSV --------------------------------------------------------------------------------


class _Lines:
    """The lines of a text file, remembering the last one (to say which field of it was
    too long for the CSV reader)."""

    __slots__ = ("handle", "last")

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.last = ""

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.last = line
            yield line


def _csv_header(path: Path) -> list[str]:
    with _open_text(path) as head:
        try:
            return next(csv.reader(head), [])
        except csv.Error as exc:
            raise IngestError(f"{path}: line 1: cannot read the header: {exc}") from None


def _csv_rows(path: Path) -> Iterator[tuple[str, Row]]:
    # Opened here, not in read_rows, so that a file rejected before its rows are read is
    # never left open.
    with _open_text(path) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        try:
            columns = next(reader, [])
            width = len(columns)
            while True:
                start = reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield f"line {start}", BadRow(_csv_problem(exc, lines.last, columns))
                    continue
                if not cells:  # a blank line
                    continue
                if len(cells) > width:
                    extra = len(cells) - width
                    yield f"line {start}", BadRow(
                        f"{len(cells)} cells, the header has {width} ({extra} after "
                        f"{columns[-1]!r})" if columns else f"{len(cells)} cells, no header")
                    continue
                row: dict[str, Any] = {k: (None if v in _CSV_NULLS else v)
                                       for k, v in zip(columns, cells, strict=False)}
                if len(cells) < width:
                    row.update(dict.fromkeys(columns[len(cells):]))
                yield f"line {start}", row
        except _READ_ERRORS as exc:
            raise _unreadable(path, f"past line {reader.line_num:,}", exc) from None


def _csv_problem(exc: csv.Error, line: str, columns: list[str]) -> str:
    limit = csv.field_size_limit()
    if "field larger than field limit" not in str(exc):
        return f"cannot read the CSV row ({exc})"
    # Which cell: count the delimiters outside quotes up to the first long field.
    index = _long_cell(line, limit)
    name = columns[index] if index is not None and index < len(columns) else None
    where = f"field {name!r}: " if name is not None else ""
    return f"{where}is longer than {limit:,} characters, the CSV reader's limit"


def _long_cell(line: str, limit: int) -> int | None:
    index = length = 0
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            index, length = index + 1, 0
            continue
        length += 1
        if length > limit:
            return index
    return None


# --- JSON lines ---------------------------------------------------------------------------


def _json_rows(path: Path) -> Iterator[tuple[str, Row]]:
    read = [0]
    with _open_text(path) as handle:
        try:
            yield from _json_lines(handle, read)
        except _READ_ERRORS as exc:
            raise _unreadable(path, f"past line {read[0]:,}", exc) from None


def _json_lines(lines: Iterable[str], read: list[int] | None = None) -> Iterator[tuple[str, Row]]:
    """(where, row) of each non-blank JSON line; ``read[0]`` follows the line number."""
    for number, text in enumerate(lines, start=1):
        if read is not None:
            read[0] = number
        if text.strip():
            yield f"line {number}", _json_line(text)


def _json_line(text: str) -> Row:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRow(f"invalid JSON ({exc.msg} at character {exc.pos + 1:,})")
    except RecursionError:
        return BadRow(_field_prefix(_deep_field(text)) +
                      f"is nested more than {MAX_DEPTH} levels deep")
    except ValueError:  # an integer of more digits than int() reads (4,300)
        return _long_integer(text)
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number")
        return BadRow(f"a JSON object was expected, not {kind}")
    return value


def _field_prefix(name: str | None) -> str:
    return "" if name is None else f"field {name!r}: "


class _LongInt:
    def __init__(self, digits: int) -> None:
        self.digits = digits


def _long_integer(text: str) -> BadRow:
    """The row with an integer too long to read, naming its field."""

    def parse_int(digits: str) -> Any:
        return _LongInt(len(digits.lstrip("-"))) if len(digits) > 4000 else int(digits)

    try:
        value = json.loads(text, parse_int=parse_int)
    except (ValueError, RecursionError):
        value = None

    def find(item: Any) -> _LongInt | None:
        if isinstance(item, _LongInt):
            return item
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        return next((found for child in children if (found := find(child))), None)

    if isinstance(value, dict):
        for key, item in value.items():
            found = find(item)
            if found is not None:
                return BadRow(f"field {key!r}: is an integer of {found.digits:,} digits, "
                              "beyond the range of a float (1.8e308)")
    return BadRow("holds an integer too long to read")


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def _deep_field(text: str) -> str | None:
    """The top-level key whose value nests deepest past ``MAX_DEPTH``, found by counting
    brackets outside strings (the line is too deep for the parser)."""
    depth = 0
    key = last = None
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH + 1:
                break
        elif token in ("]", "}"):
            depth -= 1
        elif token == ":":
            if depth == 1:
                key = last
        else:
            last = token
    if key is None:
        return None
    try:
        name = json.loads(key)
    except ValueError:
        return None
    return name if isinstance(name, str) else None


# --- Parquet ----------------------------------------------------------------------------


def _parquet_rows(path: Path, pfile: Any) -> Iterator[tuple[str, Row]]:
    import pyarrow as pa

    n = 0
    try:
        for batch in pfile.iter_batches(batch_size=20_000):
            # Times become naive UTC datetimes in microseconds, what the store keeps:
            # Arrow stores zoned times as UTC already, a pytz zone object per row cost
            # more than the database insert, and nanoseconds come back as pandas
            # Timestamps, ten times slower to convert and compare than a datetime.
            for i, fld in enumerate(batch.schema):
                if pa.types.is_timestamp(fld.type) and (fld.type.tz is not None
                                                        or fld.type.unit != "us"):
                    try:
                        # Unsafe only from nanoseconds, where it truncates: from seconds
                        # it would wrap an overflow around silently.
                        column = batch.column(i).cast(pa.timestamp("us"),
                                                      safe=fld.type.unit != "ns")
                    except pa.ArrowException:  # beyond what microseconds hold
                        continue  # read cell by cell below, each bad one a bad row
                    batch = batch.set_column(i, fld.name, column)
            try:
                rows: Iterable[Row] = batch.to_pylist()
            except (pa.ArrowException, OverflowError, ValueError):
                rows = _cell_by_cell(batch)  # a value Python cannot hold (year 10000)
            for row in rows:
                n += 1
                yield f"row {n}", row
    except (*_READ_ERRORS, pa.ArrowException) as exc:
        raise _unreadable(path, f"past row {n:,}", exc) from None


class _Unreadable:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _cell_by_cell(batch: Any) -> list[Row]:
    def cell(column: Any, i: int) -> Any:
        try:
            return column[i].as_py()
        except (OverflowError, ValueError, ArithmeticError) as exc:
            return _Unreadable(str(exc) or type(exc).__name__)

    values = []
    for column in batch.columns:
        try:
            values.append(column.to_pylist())
        except (OverflowError, ValueError, ArithmeticError):
            values.append([cell(column, i) for i in range(len(column))])
    rows: list[Row] = []
    for cells in zip(*values, strict=True):
        row = dict(zip(batch.schema.names, cells, strict=True))
        bad = next(((k, v) for k, v in row.items() if isinstance(v, _Unreadable)), None)
        rows.append(row if bad is None else BadRow(
            f"field {bad[0]!r}: cannot be read ({bad[1].reason})"))
    return rows


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


FAST_BATCH = 100_000  # rows per Arrow batch on the fast path: one staging transaction each
FIRST_PIECE = 10_000  # rows of a file's first piece (``_ramp``)
RAMP = 1.25  # each next piece that much longer, up to FAST_BATCH rows


def _layout(schema: ModelSchema, default_version: str | None) -> LogLayout:
    pred = schema.prediction
    if pred is None:  # a contract without a prediction: the row path knows its rules
        raise NotFast("no prediction column")
    skip = {*RESERVED, pred.column, *pred.probability_columns.values(), "probabilities",
            "features"}
    if schema.target is not None:
        skip.add(schema.target.column)
    return LogLayout(pred.column, dict(pred.probability_columns), frozenset(skip),
                     default_version)


def _parquet_stored(engine: Engine, model: str, path: Path
                    ) -> tuple[bool, list[tuple[Any, list[str]]]]:
    """Whether every request id of the file is stored (a file loaded again: it is then
    neither decoded nor checked), and each batch's ids, read from that column alone,
    with the stored ones among them, up to the first batch with an id not stored (a
    first load pays for one batch's ids, and the load reuses what was looked up)."""
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(path)
    looked: list[tuple[Any, list[str]]] = []
    if "request_id" not in pfile.schema_arrow.names:
        return False, looked
    for batch in pfile.iter_batches(batch_size=FAST_BATCH, columns=["request_id"]):
        try:
            ids = request_ids(batch.column(0))
        except NotFast:
            return False, looked
        stored = _stored_among(engine, model, ids)
        looked.append((ids, stored))
        if not _all_stored(ids, stored):
            return False, looked
    return bool(looked), looked


def _checked_batches(engine: Engine, model: str, path: Path, layout: LogLayout
                     ) -> Iterator[tuple[ArrowLogs | _Stored, Any, Encoded]]:
    """Each batch of the file checked, a mask of its rows not stored yet (None: all),
    and those rows encoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        whole, looked = _parquet_stored(engine, model, path)
        if whole:
            for ids, _ in looked:
                yield _Stored(ids), None, _nothing()
            return
        # The ids looked up already, of the file's first rows, and the stored ones among
        # them (a list that holds more stored ids is as good for a piece's mask).
        looked_ids = pa.chunked_array([ids for ids, _ in looked], type=pa.string())
        looked_stored = [rid for _, stored in looked for rid in stored]
        at = 0
        for piece in _ramp(pq.ParquetFile(path).iter_batches(batch_size=FAST_BATCH)):
            logs = ArrowLogs(piece, layout)
            n = piece.num_rows
            stored = looked_stored if at + n <= len(looked_ids) and looked_ids.slice(
                at, n).combine_chunks().equals(logs.ids) else None
            at += n
            keep = _not_stored(engine, model, logs, stored)
            yield logs, keep, logs.encode(keep)
    except (*_READ_ERRORS, pa.ArrowException) as exc:
        raise NotFast(f"read: {exc}") from None


def _ramp(batches: Iterator[Any]) -> Iterator[Any]:
    """A file's batches as they are loaded: first ``FIRST_PIECE`` rows, then pieces each
    ``RAMP`` times as long, up to the file's own batches. The database starts writing once
    that many rows are checked and encoded, not a whole batch (PostgreSQL sat idle 0.45 s
    per 100,000 rows), and, as checking and encoding a row takes the reading thread a
    little less time than the server's COPY of it, each next piece is ready about when
    the last one is written."""
    import pyarrow as pa

    size, count = FIRST_PIECE, 0
    held: list[Any] = []
    for batch in batches:
        at, n = 0, batch.num_rows
        while at < n:
            if size >= FAST_BATCH and not held:
                # Ramped up: the rest of the file in its own batches, not copied.
                yield batch.slice(at) if at else batch
                break
            take = min(size - count, n - at)
            held.append(batch.slice(at, take))
            at, count = at + take, count + take
            if count == size:
                yield held[0] if len(held) == 1 else pa.concat_batches(held)
                held, count, size = [], 0, max(size + 1, int(size * RAMP))
    if held:
        yield held[0] if len(held) == 1 else pa.concat_batches(held)


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _checked_json_chunks(engine: Engine, model: str, schema: ModelSchema, path: Path,
                         layout: LogLayout
                         ) -> Iterator[tuple[ArrowLogs | _Stored, Any, Encoded]]:
    """A JSON-lines file read ``FAST_JSON_BYTES`` of whole lines at a time, each chunk as an
    HTTP batch is (``_json_logs``), unless its request ids, read first (``line_ids``), are
    all stored: then the chunk is neither parsed nor checked, and a file loaded again
    costs about a read of it. A line whose id is stored is not read past its id."""
    import pyarrow as pa

    from monitor.store.json_logs import line_ids

    first = True
    try:
        with _open_bytes(path) as handle:
            # A short first chunk: the database starts writing sooner (``_ramp``).
            while chunk := _whole_lines(handle, FAST_JSON_BYTES // 8 if first
                                        else FAST_JSON_BYTES):
                if first and chunk.startswith(_BOM):  # as utf-8-sig reads it
                    chunk = chunk[len(_BOM):]
                first = False
                try:
                    ids = line_ids(chunk)
                    stored = None
                    if ids is not None:
                        stored = _stored_among(engine, model, ids)
                        if _all_stored(ids, stored):
                            yield _Stored(ids), None, _nothing()
                            continue
                    logs = _json_logs(chunk, schema, layout)
                    # Every line's id was read: the ids looked up are the parsed ones.
                    keep = _not_stored(engine, model, logs, stored)
                    rows = logs.encode(keep)
                except (pa.ArrowException, ValueError, TypeError, ArithmeticError) as exc:
                    # Unforeseen input: the row path answers for it.
                    raise NotFast(f"{type(exc).__name__}: {exc}") from None
                yield logs, keep, rows
    except _READ_ERRORS as exc:
        raise NotFast(f"read: {exc}") from None


def _whole_lines(handle: IO[bytes], size: int) -> bytes:
    """About ``size`` bytes of the file, to the end of a line (b"" at its end)."""
    chunk = handle.read(size)
    return chunk + handle.readline() if chunk and not chunk.endswith(b"\n") else chunk


@dataclass(frozen=True)
class _Stored:
    """A chunk whose every request id is stored: its ids, for the report and the check of
    ids repeated across chunks."""

    ids: Any

    @property
    def n(self) -> int:
        return len(self.ids)


def _nothing() -> Encoded:
    import pyarrow as pa

    text = pa.array([], pa.string())
    return Encoded(request_id=text, ts=text, features=text, prediction=text,
                   probabilities=text, latency_ms=pa.array([], pa.float64()),
                   error=pa.array([], pa.bool_()), error_message=text, model_version=text,
                   fallback_reason=text)


def _json_logs(body: bytes, schema: ModelSchema, layout: LogLayout) -> ArrowLogs:
    """The rows of a JSON-lines body checked (``NotFast`` as ``read_json_batch``)."""
    from monitor.store.json_logs import read_json_batch

    assert schema.prediction is not None  # _layout refused a contract without one
    parsed = read_json_batch(body, schema.prediction.column,
                             dict(schema.prediction.probability_columns),
                             layout.not_features, layout.default_version)
    return ArrowLogs(parsed.batch, parsed.layout)


def _stored_among(engine: Engine, model: str, ids: Any) -> list[str]:
    """The stored request ids of the model, among them all of ``ids`` that are."""
    return stored_request_ids(engine, model, ids.to_pylist())


def _all_stored(ids: Any, stored: list[str]) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    return len(ids) > 0 and bool(stored) and bool(pc.all(pc.is_in(ids, value_set=pa.array(
        stored, type=pa.string()))).as_py())


def _not_stored(engine: Engine, model: str, logs: ArrowLogs,
                stored: list[str] | None = None) -> Any:
    """A mask of the rows whose request id is not stored yet (None: all of them);
    ``stored``: the look-up made already for these ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if stored is None:
        stored = _stored_among(engine, model, logs.ids)
    return None if not stored else pc.invert(
        pc.is_in(logs.ids, value_set=pa.array(stored, type=pa.string())))


_BOM = b"\xef\xbb\xbf"
FAST_JSON_BYTES = 8 << 20  # text per chunk of a JSON-lines file on the fast path (memory)
_DONE = object()


def _ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, the next one made in a thread while the caller uses this one: the file
    is read, checked and encoded (Arrow lets go of the GIL) while the database writes."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_DONE, None))
        except BaseException as exc:  # handed to the caller's thread
            offer((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="mqm-ingest-read", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = ready.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _fast_logs(engine: Engine, model: str, schema: ModelSchema, path: Path,
               default_version: str | None, blocks: bool = False) -> IngestReport:
    """A Parquet or JSON-lines file loaded a batch at a time, checked and encoded column
    by column (``monitor.store.arrow_logs``); rows already stored are found by their ids
    first and neither encoded nor staged. Raises ``NotFast`` for a file the row path must
    read: any row that may be bad, types it does not handle, an empty file, repeated ids.

    ``blocks``: the rows are also coded for log blocks as they are read, and once the
    load is published the blocks are written from them (``_write_blocks``)."""
    kind = _kind(path)
    if kind not in ("parquet", "jsonl"):
        raise NotFast("not Parquet nor JSON lines")
    if engine.dialect.name == "postgresql":
        from monitor.store.staging import DirectConflict

        try:
            return _fast_load(engine, model, schema, path, kind, default_version, blocks,
                              direct=True)
        except DirectConflict as exc:
            # Another writer stored one of the keys since they were looked up (or the
            # file repeats one): the staged load skips what is stored, or says why not.
            _log.info("%s: %s: loading through a staged load: %s", model, path, exc)
    return _fast_load(engine, model, schema, path, kind, default_version, blocks,
                      direct=False)


def _fast_load(engine: Engine, model: str, schema: ModelSchema, path: Path, kind: str,
               default_version: str | None, blocks: bool, *, direct: bool) -> IngestReport:
    """``_fast_logs``'s load; ``direct``: copied straight into the table (PostgreSQL,
    ``monitor.store.staging.DirectLoad``), which raises ``DirectConflict`` when a key
    is stored already."""
    layout = _layout(schema, default_version)
    report = IngestReport(file=str(path))
    batches = (_checked_batches(engine, model, path, layout) if kind == "parquet"
               else _checked_json_chunks(engine, model, schema, path, layout))
    loaded = None
    if blocks:
        from monitor.store.arrow_blocks import LoadedRows

        loaded = LoadedRows(engine.dialect.name == "sqlite")
    published: Sequence[int] = ()
    copy = engine.dialect.name == "postgresql"
    with log_load(engine, model, direct=direct) as load:
        for logs, rows, part, text in _ahead(_coded(model, batches, loaded, copy)):
            report.rows += logs.n
            load.add_arrow(rows, text=text)
            if loaded is not None and part is not None:
                loaded.add(part, rows.request_id)
        if not report.rows:
            raise NotFast("no rows")
        if loaded is None:
            report.added = load.publish(checked=True)
        else:
            published = load.publish_ids(checked=True)
            report.added = len(published)
    report.already_stored = report.rows - report.added
    if loaded is not None and len(published) and not loaded.failed:
        _write_blocks(engine, model, loaded, published)
    elif loaded is not None and loaded.too_large:
        from monitor.store.arrow_blocks import MAX_LOADED_ROWS

        _log.info("%s: %s: more than %d rows: their log blocks are left to compaction",
                  model, path, MAX_LOADED_ROWS)
    return report


def _coded(model: str, batches: Iterator[tuple[ArrowLogs | _Stored, Any, Encoded]],
           loaded: LoadedRows | None, copy: bool
           ) -> Iterator[tuple[ArrowLogs | _Stored, Encoded, Part | None, Any]]:
    """Each batch with its staged rows in block form (``loaded``: else None) and, with
    ``copy``, as PostgreSQL's COPY text (else None), made on the reading thread, so that
    the database is never kept waiting for them. A failure to code the rows for blocks is
    logged and ends that coding, never the load: compaction writes the blocks later.
    ``NotFast`` after the last batch when a request id repeats across the file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from monitor.store.arrow_blocks import coded_rows
    from monitor.store.arrow_logs import copy_text

    ids: list[Any] = []
    for logs, keep, rows in batches:
        ids.append(logs.ids)
        part = None
        # A chunk whose every row is stored (``_Stored``) stages nothing: nothing to code.
        if loaded is not None and not loaded.failed and isinstance(logs, ArrowLogs):
            try:
                part = coded_rows(logs, keep, sqlite=loaded.sqlite, request_ids=False)
            except Exception as exc:
                loaded.fail()
                _log.warning("%s: the rows are loaded without their log blocks (compaction "
                             "will write them): %s: %s", model, type(exc).__name__,
                             shown(str(exc), 200), exc_info=_log.isEnabledFor(logging.DEBUG))
        yield logs, rows, part, copy_text(rows, model) if copy and len(rows) else None
    # Here, on the reading thread, while the database writes the last batch (a million
    # ids take 0.15 s); raised from here, it rolls the load back as from the caller.
    if ids and pc.count_distinct(pa.chunked_array(ids)).as_py() != sum(len(i) for i in ids):
        raise NotFast("repeated request ids")


def _write_blocks(engine: Engine, model: str, loaded: LoadedRows, ids: Sequence[int]) -> None:
    """Log blocks for a published load's rows. The load is stored whatever happens here:
    a failure is logged, and compaction copies the rows later."""
    from monitor.store.arrow_blocks import write_load_blocks

    try:
        write_load_blocks(engine, model, loaded, ids)
    except Exception as exc:
        _log.warning("%s: the loaded rows are stored; their log blocks were not written "
                     "(compaction will write them): %s: %s", model, type(exc).__name__,
                     shown(str(exc), 200), exc_info=_log.isEnabledFor(logging.DEBUG))


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
            return _fast_logs(engine, model, schema, path, default_version, blocks)
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
    (``_fast_log_batch``); any other is read row by row, with the same result.
    ``fast=False`` reads row by row always (tests compare the two)."""
    if fast:
        try:
            return _fast_log_batch(engine, model, schema, body, source, default_version)
        except NotFast as exc:
            _log.debug("%s: read row by row (%s)", source, exc)
        except DatabaseError:
            raise
        except Exception as exc:  # hostile input must get the row path's answer, never a 500
            _log.warning("%s: the fast path failed, read row by row (%s: %s)", source,
                         type(exc).__name__, shown(str(exc), 200))
    return _load_logs(engine, model, schema, IngestReport(file=source), _body_rows(body),
                      False, on_error, default_version)


def _fast_log_batch(engine: Engine, model: str, schema: ModelSchema, body: bytes, source: str,
                    default_version: str | None) -> IngestReport:
    """A JSON-lines batch parsed by Arrow and checked column by column
    (``monitor.store.json_logs``, ``monitor.store.arrow_logs``) and inserted at once, the
    insert skipping ids already stored. Raises ``NotFast`` for a batch the row path must
    read: any row that may be bad or be read otherwise, repeated ids, no rows."""
    import pyarrow.compute as pc

    if body.startswith(_BOM):  # as utf-8-sig reads it
        body = body[len(_BOM):]
    logs = _json_logs(body, schema, _layout(schema, default_version))
    if pc.count_distinct(logs.ids).as_py() != logs.n:
        raise NotFast("repeated request ids")
    report = IngestReport(file=source, rows=logs.n)
    # No look-up of stored ids first, as on the row path: a batch is small and mostly new,
    # and the insert skips stored ids by itself.
    report.added = insert_log_batch(engine, model, logs.encode())
    report.already_stored = report.rows - report.added
    return report


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
