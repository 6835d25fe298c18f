"""A load's rows in log-block form, built from the Arrow columns the load checked: the
blocks of a file are written as it loads, without parsing back the JSON just stored.

The compactor (``monitor.store.compaction``) reads rows back from ``inference_logs`` and
parses their JSON: about 11 s per million rows. A load on the fast path
(``monitor.store.arrow_logs``) already holds every value typed in Arrow, and the JSON it
stores is that value's exact text (a float keeps its shortest round-trip digits and a
".0" when whole, an integer its digits, a text its escapes), so what the row reader
parses back is known without reading it: ``coded_rows`` codes each column
(``monitor.store.columnar``) straight from its Arrow array. ``write_load_blocks`` then
hands the rows, with the ids the table gave them, to the compactor, which writes the
blocks by its own rules (high mark, lease fence, block size, the last block grown).

One value is not the text stored: on SQLite a JSON column has NUMERIC affinity, so a
bare float prediction is converted by SQLite itself (3.0 becomes the integer 3, and its
decimal parse is SQLite's own). A float prediction is read back from the table there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.store.arrow_logs import ArrowLogs, _floats, _kind, _text
from monitor.store.blocks import NAT, KeyOrders, Part, fetch_all
from monitor.store.columnar import BOOL, FLOAT, INT, MISSING, NONE, STR, Coded, encode

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from monitor.store.compaction import CompactResult

__all__ = ["LoadedRows", "coded_rows", "write_load_blocks"]

_log = logging.getLogger("mqm.blocks")
_INT64_MAX = np.iinfo(np.int64).max


def _pc() -> Any:
    import pyarrow.compute as pc

    return pc


def _valid(column: Any) -> np.ndarray:
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def _codes(valid: np.ndarray, code: int) -> np.ndarray:
    return np.where(valid, np.int8(code), np.int8(NONE)).astype(np.int8, copy=False)


def coded_column(column: Any) -> Coded:
    """A checked column (``arrow_logs._check_value`` accepted it) coded as ``encode``
    codes the values the row reader parses from its JSON text (``arrow_logs._json``);
    NaN is null there, as here."""
    import pyarrow as pa

    n = len(column)
    kind = _kind(column.type)
    if kind == "null" or (n and column.null_count == n):
        return Coded(np.full(n, NONE, dtype=np.int8))
    if kind == "bool":
        valid = _valid(column)
        ints = column.fill_null(False).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return Coded(_codes(valid, BOOL), i=np.asarray(ints, dtype=np.int64))
    if kind == "int":
        if (pa.types.is_uint64(column.type)
                and (_pc().max(column).as_py() or 0) > _INT64_MAX):
            return encode(column.to_pylist())  # beyond 64 bits signed: as JSON reads it
        valid = _valid(column)
        ints = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return Coded(_codes(valid, INT), i=np.asarray(ints, dtype=np.int64))
    if kind == "float":
        column = _floats("", column)
        valid = _valid(column)
        floats = column.fill_null(0.0).to_numpy(zero_copy_only=False)
        return Coded(_codes(valid, FLOAT), f=np.asarray(floats, dtype=np.float64))
    if kind == "str":
        encoded = _text(column).dictionary_encode()
        valid = _valid(encoded)
        s = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(
            np.int32, copy=False)
        words = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        return Coded(_codes(valid, STR), s=s, words=words)
    return encode(column.to_pylist())  # not reached for a checked column


def _none(n: int) -> Coded:
    return Coded(np.full(n, NONE, dtype=np.int8))


def _absent(coded: Coded, rows: np.ndarray) -> Coded:
    """``coded`` with ``rows`` (a mask) as keys the row does not have."""
    codes = coded.codes.copy()
    codes[rows] = MISSING
    return Coded(codes, coded.f, coded.i, coded.s, coded.words, coded.j)


def coded_rows(logs: ArrowLogs, keep: Any = None, *, sqlite: bool,
               request_ids: bool = True) -> Part:
    """The rows of a checked batch (those ``keep`` is true for, as ``logs.encode(keep)``)
    as the row reader reads them back once stored (``blocks.part_of``), without ids
    (zeros) and without labels. On SQLite a float prediction is left out of ``meta``:
    ``write_load_blocks`` reads it back. ``request_ids=False`` leaves them out too
    (``LoadedRows`` codes them later)."""
    import pyarrow as pa

    pc = _pc()

    def pick(column: Any) -> Any:
        return column if keep is None else column.filter(keep)

    columns = logs.columns
    layout = logs.layout
    ids = pick(logs.ids)
    n = len(ids)
    ts = np.asarray(pick(logs.ts).cast(pa.int64()).to_numpy(zero_copy_only=False),
                    dtype=np.int64)

    meta: dict[str, Coded] = {"model_version": coded_column(pick(logs.model_version))}
    if request_ids:
        meta["request_id"] = coded_column(ids)
    prediction = pick(columns[layout.prediction])
    if not (sqlite and _kind(prediction.type) == "float"):
        meta["prediction"] = coded_column(prediction)
    meta["latency_ms"] = coded_column(pick(logs.latency))
    meta["error"] = coded_column(pick(logs.error))
    meta["error_message"] = coded_column(pick(logs.error_message))
    meta["fallback_reason"] = _none(n)

    # Every row's features object has every feature, in the file's order (null kept).
    features = {name: coded_column(pick(columns[name])) for name in logs.features}
    feature_keys = KeyOrders(np.zeros(n, dtype=np.int32), [tuple(logs.features)])

    # The probabilities object has every class (null for a class without a column),
    # unless all of the row's values are missing: then the row stores none (no keys).
    probabilities: dict[str, Coded] = {}
    of_row = np.ones(n, dtype=np.int32)  # orders[1]: no keys
    present = [col for col in layout.probabilities.values() if col in columns]
    if present:
        empty = np.ones(n, dtype=np.bool_)
        for col in present:
            value = pick(columns[col])
            null = (pc.is_null(value, nan_is_null=True) if _kind(value.type) == "float"
                    else pc.is_null(value))
            empty &= np.asarray(null.to_numpy(zero_copy_only=False), dtype=np.bool_)
        for cls, col in layout.probabilities.items():
            coded = coded_column(pick(columns[col])) if col in columns else _none(n)
            probabilities[str(cls)] = _absent(coded, empty)
        of_row[~empty] = 0
    proba_keys = KeyOrders(of_row, [tuple(str(c) for c in layout.probabilities), ()])

    return Part(np.zeros(n, dtype=np.int64), ts, meta, features, probabilities, _none(n),
                np.full(n, NAT, dtype=np.int64), feature_keys, proba_keys)


# Rows a load holds in block form until it is published (about 250 MB per million
# rows): a larger file's blocks are left to compaction, so that a load's memory does not
# grow with the file.
MAX_LOADED_ROWS = 2_000_000


@dataclass
class LoadedRows:
    """The rows a load stages, in block form, batch after batch (``add``), kept until
    the load is published and its ids are known; at most ``MAX_LOADED_ROWS``."""

    sqlite: bool
    batches: list[Part] = field(default_factory=list)
    rows: int = 0
    request_ids: list[Any] = field(default_factory=list)
    failed: bool = False  # a batch could not be coded, or too many: no blocks written
    too_large: bool = False  # failed for having more than MAX_LOADED_ROWS rows

    def fail(self) -> None:
        self.failed = True
        self.batches, self.request_ids = [], []

    def add(self, part: Part, request_ids: Any = None) -> None:
        """A batch's rows (``coded_rows``); ``request_ids``, their ids as an Arrow array,
        if the part was coded without them: a million ids are 60 MB more as Python
        texts, made only once the load has let go of what it staged."""
        if len(part) and not self.failed:
            if self.rows + len(part) > MAX_LOADED_ROWS:
                self.fail()
                self.too_large = True
                return
            self.batches.append(part)
            self.request_ids.append(request_ids)
            self.rows += len(part)

    def parts(self, ids: Sequence[int]) -> list[Part] | None:
        """The batches with the ids the publish gave their rows (``ids``: one per row
        staged, in the order staged, ascending), in id order; None when rows are missing
        (another writer stored some first, and which is not known here). The batches
        are handed over: this holds none of them afterwards."""
        parts, self.batches = self.batches, []
        request_ids, self.request_ids = self.request_ids, []
        given = (np.arange(ids.start, ids.stop, dtype=np.int64) if isinstance(ids, range)
                 else np.asarray(ids, dtype=np.int64))
        if len(given) != self.rows or (len(given) > 1 and not (np.diff(given) > 0).all()):
            return None
        at = 0
        for part, texts in zip(parts, request_ids, strict=True):
            part.ids = given[at:at + len(part)]
            at += len(part)
            if texts is not None:
                part.meta["request_id"] = coded_column(texts)
        return parts


def write_load_blocks(engine: Engine, model: str, loaded: LoadedRows,
                      ids: Sequence[int]) -> CompactResult | None:
    """Blocks for the model's rows no block covers, this load's rows taken from
    ``loaded`` (``ids``: those the publish gave them, in the order staged) instead of
    read back from the table; None when the load's rows cannot be matched with their
    ids (the compactor reads them later). Raises what ``compact`` raises."""
    from monitor.store.compaction import compact

    t0 = time.perf_counter()
    known = loaded.parts(ids)
    if known is None:
        _log.info("%s: rows of the load were stored by another writer first; their log "
                  "blocks are left to compaction", model)
        return None
    if known and "prediction" not in known[0].meta:
        predictions = _stored_predictions(engine, model, known)
        at = 0
        for part in known:
            part.meta["prediction"] = predictions.take(np.arange(at, at + len(part)))
            at += len(part)
    result = compact(engine, model, known=known)
    _log.debug("%s: %d rows into %d blocks at load in %.2f s", model, result.rows,
               result.blocks, time.perf_counter() - t0)
    return result


def _stored_predictions(engine: Engine, model: str, known: list[Part]) -> Coded:
    """The predictions of the rows of ``known`` as the row reader parses them; None for
    a row no longer stored (the compactor leaves it out)."""
    from monitor.store.compaction import model_in_id_range
    from monitor.store.db import driver_connection
    from monitor.store.frames import loads_each
    from monitor.store.reading import driver_errors

    # SQLite only: a float prediction is stored as it is elsewhere.
    with engine.connect() as conn, driver_errors(engine, "reading inference logs"):
        found = fetch_all(driver_connection(conn),
                          "SELECT id, COALESCE(prediction, 'null') FROM inference_logs "
                          f"WHERE {model_in_id_range(engine.dialect.name)}",
                          [model, int(known[0].ids[0]), int(known[-1].ids[-1])])
    by_id = dict(found)
    texts = [by_id.get(i, "null") for part in known for i in part.ids.tolist()]
    return encode(loads_each(texts))
