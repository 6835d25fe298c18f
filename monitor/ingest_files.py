"""Reading inference-log and label files row by row: CSV, JSON lines and Parquet, each
row a dict of its values or a ``BadRow`` naming what is wrong with it (its line or row
number comes with it), so that a load reports every bad row and goes on (see
``monitor.ingest``, which loads them).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from monitor.errors import IngestError
from monitor.store.logs import MAX_DEPTH

__all__ = ["BadRow", "Row", "read_rows"]

_CSV_NULLS = {"", "null", "NULL", "None", "NaN", "nan"}


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


