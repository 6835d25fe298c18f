"""The fast path of a log load (``monitor.ingest``): a Parquet or JSON-lines file, or an
HTTP batch of JSON lines, read by Arrow, checked and encoded a whole column at a time
(``monitor.store.arrow_logs``, ``monitor.store.json_logs``). Request ids already stored
are looked up a batch at a time before anything is encoded; a chunk of JSON lines whose
ids are all stored is not parsed at all. Anything it cannot vouch for raises ``NotFast``,
and the caller reads the file row by row from the start instead, so that the report of a
bad row is the row path's.
"""

from __future__ import annotations

import gzip
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from monitor.errors import shown
from monitor.ingest import RESERVED, IngestReport
from monitor.ingest_files import _READ_ERRORS, _kind
from monitor.schema import ModelSchema
from monitor.store.arrow_logs import ArrowLogs, Encoded, LogLayout, NotFast, request_ids
from monitor.store.db import Engine
from monitor.store.logs import insert_log_batch, log_load, stored_request_ids

if TYPE_CHECKING:
    from monitor.store.arrow_blocks import LoadedRows
    from monitor.store.blocks import Part

__all__ = ["fast_log_batch", "fast_logs"]

_log = logging.getLogger("mqm.ingest")

T = TypeVar("T")

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


def fast_logs(engine: Engine, model: str, schema: ModelSchema, path: Path,
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
    """``fast_logs``'s load; ``direct``: copied straight into the table (PostgreSQL,
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




def fast_log_batch(engine: Engine, model: str, schema: ModelSchema, body: bytes, source: str,
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


