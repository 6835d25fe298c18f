"""Log blocks: a columnar copy of mqm's own log table, so that a window reads in a
fraction of the time it takes to parse its rows.

The rows of ``inference_logs`` keep the features exactly as received, as JSON, and
parsing a million of them takes seconds. A *block* (table ``log_blocks``) holds the
rows of one model with ``lo_id < id <= hi_id`` already parsed and coded by
``monitor.store.columnar`` (Arrow IPC, LZ4), and, apart, their labels as of
ground_truth id ``labels_hw``. This module is the blocks' form: rows in coded form
(``Part``), to and from Arrow, and the frames the row reader would build from them.
``monitor.store.block_reader`` reads windows from blocks; ``monitor.store.compaction``
writes them. Blocks are derived data: deleting them all loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from monitor.store.columnar import (
    FLOAT,
    INT,
    MISSING,
    NONE,
    STR,
    Coded,
    _need,
    concat,
    decode,
    decode_objects,
    encode,
    kinds_of,
)
from monitor.store.frames import _NAN, WindowBuilder, WindowFrames, _times, gc_paused, loads_each
from monitor.text_codes import TextCodes
from monitor.times import EPOCH

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BLOCK_ROWS", "FORMAT", "KeyOrders", "Part", "PartFiller", "concat_parts", "decode_ids",
           "decode_labels", "decode_part", "encode_part", "fetch_all", "frames_of", "part_of"]

FORMAT = 1
BLOCK_ROWS = 200_000  # rows per block: a block decodes in tens of milliseconds
NAT = np.iinfo(np.int64).min  # no time (no label yet)
_TOP = 2**62  # an id above every row's
_META = ("request_id", "model_version", "prediction", "latency_ms", "error", "error_message",
         "fallback_reason")
_EPOCH = EPOCH


# --- rows in coded form ------------------------------------------------------------


def _missing(n: int) -> Coded:
    return Coded(np.full(n, MISSING, dtype=np.int8))


@dataclass
class KeyOrders:
    """Each row's keys in their order (an index into ``orders``): the row reader orders
    columns by the first row that has each key, then by the key's place in that row."""

    of_row: np.ndarray  # int32, one per row
    orders: list[tuple[str, ...]]

    def take(self, index: np.ndarray) -> KeyOrders:
        return KeyOrders(self.of_row[index], self.orders)

    @staticmethod
    def concat(parts: Sequence[KeyOrders]) -> KeyOrders:
        lookup: dict[tuple[str, ...], int] = {}
        rows = []
        for part in parts:
            remap = np.array([lookup.setdefault(o, len(lookup)) for o in part.orders],
                             dtype=np.int32)
            rows.append(remap[part.of_row] if len(part.orders) else part.of_row)
        return KeyOrders(np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32),
                         list(lookup))

    def columns(self, columns: dict[str, Coded]) -> list[str]:
        """The present columns in the row reader's order."""
        firsts = []
        for name, coded in columns.items():
            present = coded.codes != MISSING
            if present.any():
                row = int(present.argmax())
                firsts.append((row, self.orders[self.of_row[row]].index(name), name))
        return [name for *_, name in sorted(firsts)]


def _key_orders(builder: Any) -> KeyOrders:
    return KeyOrders(np.array(builder.order_of_row, dtype=np.int32), list(builder.orders))


@dataclass
class Part:
    """Rows of one model in coded form: a block, or rows read from the table."""

    ids: np.ndarray  # int64, the rows' ids
    ts: np.ndarray  # int64, microseconds since the epoch (UTC)
    meta: dict[str, Coded]
    features: dict[str, Coded]
    probabilities: dict[str, Coded]
    labels: Coded
    label_time: np.ndarray  # int64 microseconds, NAT where no label
    feature_keys: KeyOrders
    proba_keys: KeyOrders

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray, *, emptied: bool = False) -> Part:
        """The rows ``index`` picks; ``emptied``: this part's columns are dropped as they
        are copied (one column at a time held twice, not the part)."""

        def taken(columns: dict[str, Coded]) -> dict[str, Coded]:
            if not emptied:
                return {k: v.take(index) for k, v in columns.items()}
            return {k: columns.pop(k).take(index) for k in list(columns)}

        return Part(self.ids[index], self.ts[index], taken(self.meta),
                    taken(self.features), taken(self.probabilities),
                    self.labels.take(index), self.label_time[index],
                    self.feature_keys.take(index), self.proba_keys.take(index))


def _micros(values: Sequence[Any]) -> np.ndarray:
    times = _times(list(values))
    out: np.ndarray = times.asi8 // 1000
    out[times.isna()] = NAT
    return out


def part_of(builder: WindowBuilder) -> Part:
    """The rows of a builder (made with ``key_orders=True``) filled by ``fetch_into``:
    raw values, before ``build``."""
    meta = builder.meta
    with gc_paused():
        coded = {name: encode(meta[name]) for name in _META if name != "fallback_reason"}
        coded["fallback_reason"] = encode(builder.fallback)
        features = {k: encode(v, _NAN) for k, v in builder.features.columns.items()}
        probabilities = {k: encode(v, _NAN) for k, v in builder.probabilities.columns.items()}
        labels = encode(builder.labels)
    return Part(np.array(builder.ids, dtype=np.int64), _micros(meta["ts"]), coded, features,
                probabilities, labels, _micros(meta["label_time"]),
                _key_orders(builder.features), _key_orders(builder.probabilities))


def concat_parts(parts: Sequence[Part]) -> Part:
    """Rows of ``parts`` one after another."""
    if len(parts) == 1:
        return parts[0]

    def joined(attr: str) -> dict[str, Coded]:
        names = dict.fromkeys(name for p in parts for name in getattr(p, attr))
        return {name: concat([getattr(p, attr).get(name) or _missing(len(p)) for p in parts])
                for name in names}

    return Part(np.concatenate([p.ids for p in parts]), np.concatenate([p.ts for p in parts]),
                joined("meta"), joined("features"), joined("probabilities"),
                concat([p.labels for p in parts]),
                np.concatenate([p.label_time for p in parts]),
                KeyOrders.concat([p.feature_keys for p in parts]),
                KeyOrders.concat([p.proba_keys for p in parts]))


class _ColumnFiller:
    """One coded column of a window, filled part after part (``concat``'s result)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.codes = np.zeros(rows, dtype=np.int8)  # MISSING: a part without the column
        self.f: np.ndarray | None = None
        self.i: np.ndarray | None = None
        self.s: np.ndarray | None = None
        self.j: np.ndarray | None = None
        self.words: list[np.ndarray] = []
        self.shift = 0

    def put(self, at: int, coded: Coded) -> None:
        rows = slice(at, at + len(coded))
        self.codes[rows] = coded.codes
        if coded.f is not None:
            if self.f is None:
                self.f = np.zeros(self.rows)
            self.f[rows] = coded.f
        if coded.i is not None:
            if self.i is None:
                self.i = np.zeros(self.rows, dtype=np.int64)
            self.i[rows] = coded.i
        if coded.j is not None:
            if self.j is None:
                self.j = np.full(self.rows, None, dtype=object)
            self.j[rows] = coded.j
        if coded.words is not None:
            # The parts' dictionaries one after another, indices shifted to match.
            if self.s is None:
                self.s = np.full(self.rows, -1, dtype=np.int32)
            if coded.s is not None:  # else no row of the part is a text: -1 already
                # Written in place: -1 (not a text) as is, the others shifted.
                if self.shift:
                    np.add(coded.s, self.shift, out=self.s[rows], where=coded.s >= 0)
                else:
                    self.s[rows] = coded.s
            self.words.append(coded.words)
            self.shift += len(coded.words)

    def coded(self, rows: int) -> Coded:
        """The column's first ``rows`` rows (the filler's arrays, trimmed in place)."""
        return Coded(_trim(self.codes, rows), _trim(self.f, rows), _trim(self.i, rows),
                     _trim(self.s, rows),
                     np.concatenate(self.words) if self.words else None, _trim(self.j, rows))


@overload
def _trim(values: np.ndarray, rows: int) -> np.ndarray: ...


@overload
def _trim(values: None, rows: int) -> None: ...


def _trim(values: np.ndarray | None, rows: int) -> np.ndarray | None:
    """``values[:rows]``, its own array: the tail goes back to the allocator (``realloc``
    shrinks in place) instead of staying behind a view. Only the filler's own arrays,
    which nothing else views, are trimmed so."""
    if values is None or len(values) == rows:
        return values
    if values.dtype == object:  # resizing would drop the tail's references uncounted
        return values[:rows].copy()
    values.resize(rows, refcheck=False)
    return values


class PartFiller:
    """Parts (a window's blocks, then the rows no block covers) copied one after another
    into arrays of at most ``rows`` rows (the window's count, or its blocks' rows before
    their cut to the window): ``concat_parts``'s result, but each block's own columns
    can go as soon as they are copied (``concat_parts`` holds every block and their
    concatenation at once: 330 MB per million rows instead of 160)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.count = 0  # rows added, also beyond ``rows`` (then only their ids are kept)
        self._ids: list[np.ndarray] = []
        self._ts = np.zeros(rows, dtype=np.int64)
        self._label_time = np.zeros(rows, dtype=np.int64)
        self._groups: dict[str, dict[str, _ColumnFiller]] = {
            "meta": {}, "features": {}, "probabilities": {}}
        self._labels = _ColumnFiller(rows)
        self._feature_keys: list[KeyOrders] = []
        self._proba_keys: list[KeyOrders] = []

    def add(self, part: Part) -> None:
        at, n = self.count, len(part)
        self.count += n
        self._ids.append(part.ids)
        if self.count > self.rows:
            return  # more rows than room: the caller reads the rows instead
        self._ts[at:at + n] = part.ts
        self._label_time[at:at + n] = part.label_time
        for attr, fillers in self._groups.items():
            for name, coded in getattr(part, attr).items():
                filler = fillers.get(name)
                if filler is None:
                    filler = fillers[name] = _ColumnFiller(self.rows)
                filler.put(at, coded)
        self._labels.put(at, part.labels)
        self._feature_keys.append(part.feature_keys)
        self._proba_keys.append(part.proba_keys)

    def ids(self) -> np.ndarray:
        """The ids of every row added."""
        return np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)

    def part(self) -> Part:
        """The rows added, when they fit; the filler is spent (its arrays are the part's,
        trimmed to the rows added)."""
        n = self.count
        if n > self.rows:
            raise ValueError(f"{n} rows added, room for {self.rows}")

        def coded(attr: str) -> dict[str, Coded]:
            return {name: f.coded(n) for name, f in self._groups[attr].items()}

        return Part(self.ids(), _trim(self._ts, n), coded("meta"), coded("features"),
                    coded("probabilities"), self._labels.coded(n), _trim(self._label_time, n),
                    KeyOrders.concat(self._feature_keys), KeyOrders.concat(self._proba_keys))


# --- Arrow form --------------------------------------------------------------------


def _ipc(names: list[str], arrays: list[Any], metadata: dict[str, str]) -> bytes:
    import pyarrow as pa

    table = pa.table(dict(zip(names, arrays, strict=True)), metadata=metadata)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _system_pool() -> None:
    """Arrow allocates with the C library's allocator from here on, as numpy does.
    Arrow's default (mimalloc) keeps what Arrow frees for Arrow alone: a window's blocks,
    decompressed (200 MB per million rows), stayed in the process after the frames were
    built from them, out of numpy's reach (peak RSS of a 1M-row check 760 -> 600 MB)."""
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def _columns(data: bytes) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    import pyarrow as pa

    _system_pool()
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    # A block is one record batch: its columns as they are (``combine_chunks`` copies
    # even a single chunk, 0.01-0.05 s and the block's size again per block).
    return ({name: _one_array(table.column(name)) for name in table.column_names},
            table.schema.metadata or {})


def _one_array(column: Any) -> Any:
    """A chunked column as one array: its only chunk itself, else the chunks joined."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def encode_part(part: Part) -> tuple[bytes, bytes]:
    """(rows, labels) of a part as two Arrow IPC streams."""
    return encode_rows(part), encode_labels(part.labels, part.label_time)


def encode_labels(labels: Coded, label_time: np.ndarray) -> bytes:
    """A block's labels and label times, apart from its rows: they change as labels
    arrive."""
    import pyarrow as pa

    from monitor.store.columnar import to_arrow

    n, a = to_arrow("label", labels)
    return _ipc(["label_time", *n], [pa.array(label_time, type=pa.int64()), *a],
                {"format": str(FORMAT)})


def decode_labels(labels: bytes) -> tuple[Coded, np.ndarray]:
    """A block's labels and label times (microseconds, NAT where none)."""
    from monitor.store.columnar import from_arrow

    columns, _ = _columns(labels)
    label_time = columns.pop("label_time").to_numpy()
    return from_arrow(columns)["label"], label_time


def decode_ids(data: bytes) -> np.ndarray:
    """A block's row ids, without decoding its other columns."""
    import pyarrow as pa

    reader = pa.ipc.open_stream(pa.py_buffer(data))
    return np.asarray(pa.concat_arrays([batch.column("id") for batch in reader]).to_numpy())


def encode_rows(part: Part) -> bytes:
    import pyarrow as pa

    from monitor.store.columnar import to_arrow

    names = ["id", "ts", "feature_keys", "proba_keys"]
    arrays: list[Any] = [pa.array(part.ids, type=pa.int64()), pa.array(part.ts, type=pa.int64()),
                         pa.array(part.feature_keys.of_row, type=pa.int32()),
                         pa.array(part.proba_keys.of_row, type=pa.int32())]
    for prefix, columns in (("m", part.meta), ("f", part.features), ("p", part.probabilities)):
        for name, coded in columns.items():
            n, a = to_arrow(f"{prefix}:{name}", coded)
            names += n
            arrays += a
    return _ipc(names, arrays, {"format": str(FORMAT),
                                "feature_keys": json.dumps(part.feature_keys.orders),
                                "proba_keys": json.dumps(part.proba_keys.orders)})


def decode_part(data: bytes, labels: bytes, skip: Collection[str] = ()) -> Part:
    """A block's rows; ``skip``: meta columns left out (not decoded: a million request
    ids are a million Python strings)."""
    from monitor.store.columnar import from_arrow

    columns, metadata = _columns(data)
    if skip:
        dropped = tuple(f"m:{name}\x00" for name in skip)
        columns = {k: v for k, v in columns.items() if not k.startswith(dropped)}
    ids = columns.pop("id").to_numpy()
    ts = columns.pop("ts").to_numpy()
    feature_keys = KeyOrders(columns.pop("feature_keys").to_numpy(),
                             [tuple(o) for o in json.loads(metadata[b"feature_keys"])])
    proba_keys = KeyOrders(columns.pop("proba_keys").to_numpy(),
                           [tuple(o) for o in json.loads(metadata[b"proba_keys"])])
    coded = from_arrow(columns)
    groups: dict[str, dict[str, Coded]] = {"m": {}, "f": {}, "p": {}}
    for key, value in coded.items():
        prefix, name = key.split(":", 1)
        groups[prefix][name] = value
    label_values, label_time = decode_labels(labels)
    return Part(ids, ts, groups["m"], groups["f"], groups["p"], label_values, label_time,
                feature_keys, proba_keys)


# --- frames ------------------------------------------------------------------------


def _in_order(ids: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """Positions that put rows in (ts, id) order, the row reader's; None if they are."""
    if len(ts) < 2:
        return None
    # Times rising strictly (rows logged apart) settle it in one comparison; equal times
    # are then ordered by id.
    later = ts[1:] > ts[:-1]
    if later.all():
        return None
    if (later | ((ts[1:] == ts[:-1]) & (ids[1:] > ids[:-1]))).all():
        return None
    return np.lexsort((ids, ts))


_TEXT_FLOAT_OR_NULL = frozenset({MISSING, NONE, FLOAT, STR})


def _text_codes(coded: Coded) -> TextCodes | None:
    """A column of texts, floats and nulls as codes into its distinct texts (a window's
    blocks each bring their own dictionary, so equal texts may repeat in
    ``coded.words``), and its floats."""
    import pandas as pd

    if coded.words is None or coded.s is None:
        return None
    kinds = kinds_of(coded.codes)
    if not kinds <= _TEXT_FLOAT_OR_NULL:
        return None
    remap, words = pd.factorize(coded.words)
    # The smallest signed type that holds every code and -1 (a category: one byte a row).
    small = np.min_scalar_type(-max(len(words), 1))
    # ``s`` is -1 where a row is no text: the table's last entry, -1 too. One take.
    codes = np.append(remap.astype(small), small.type(-1))[coded.s]
    numbers = None
    if FLOAT in kinds:
        numbers = np.where(coded.codes == FLOAT, _need(coded.f), np.nan)
    return TextCodes(codes, np.asarray(words, dtype=object), numbers)


def _frame(columns: dict[str, Coded], keys: KeyOrders, n: int,
           texts: dict[str, TextCodes] | None = None) -> pd.DataFrame:
    """The columns decoded in the row reader's order, each dropped from ``columns`` once
    decoded (a window's coded arrays go as its frame grows: 90 MB less at the peak per
    million rows); with ``texts``, the text columns' codes are kept there."""
    import pandas as pd

    data = {}
    for name in keys.columns(columns):
        coded = columns.pop(name)
        data[name] = decode(coded)
        if texts is not None and (codes := _text_codes(coded)) is not None:
            texts[name] = codes
        del coded
    columns.clear()  # columns no row holds
    return pd.DataFrame(data, index=pd.RangeIndex(n), copy=False)


def _index(micros: np.ndarray) -> pd.DatetimeIndex:
    import pandas as pd

    stamps = micros.astype("datetime64[us]")
    stamps[micros == NAT] = np.datetime64("NaT")
    return pd.DatetimeIndex(stamps.astype("datetime64[ns]")).tz_localize("UTC")


def frames_of(part: Part, late: Sequence[tuple[int, Any, Any]] = (),
              skip: Collection[str] = ()) -> WindowFrames:
    """The frames the row reader builds from the same rows; ``late`` labels (row id,
    label JSON text, label time as the driver gives it) are applied on top. ``skip``:
    meta columns left out of ``meta`` (the others stay in their order). ``part`` is used
    up: its columns are dropped as they are decoded."""
    import pandas as pd

    order = _in_order(part.ids, part.ts)
    if order is not None:
        part = part.take(order, emptied=True)
    n = len(part)
    index = pd.RangeIndex(n)
    labels = decode_objects(part.labels)
    label_time = part.label_time
    if late:
        positions = pd.Index(part.ids).get_indexer([row_id for row_id, _, _ in late])
        found = positions >= 0
        if found.any():
            label_time = label_time.copy()
            texts = [text for (_, text, _), ok in zip(late, found, strict=True) if ok]
            labels[positions[found]] = np.fromiter(loads_each(texts), dtype=object,
                                                   count=len(texts))
            label_time[positions[found]] = _micros(
                [when for (_, _, when), ok in zip(late, found, strict=True) if ok])
    label_codes = _label_codes(part.labels, labels, positions[positions >= 0] if late else None)
    coded_meta = part.meta
    # The columns a run codes (versions; a classifier's predictions), from their codes,
    # before they are decoded. A version's name is ``str`` of it, ``label_text``'s too for
    # the texts and ints ``_label_codes`` codes.
    version_codes = None if "model_version" in skip else _label_codes(
        coded_meta["model_version"])
    prediction_codes = None if "prediction" in skip else _label_codes(coded_meta["prediction"])

    def meta_column(name: str) -> Callable[[], Any]:
        return lambda: decode(coded_meta.pop(name))

    makers: dict[str, Callable[[], Any]] = {
        "request_id": meta_column("request_id"), "ts": lambda: _index(part.ts),
        "model_version": meta_column("model_version"),
        "prediction": meta_column("prediction"),
        "latency_ms": meta_column("latency_ms"),
        "error": meta_column("error"),
        "error_message": meta_column("error_message"),
        "label_time": lambda: _index(label_time),
    }
    meta = {name: make() for name, make in makers.items() if name not in skip}
    fallback = pd.Series(decode_objects(coded_meta.pop("fallback_reason")), index=index,
                         dtype=object, name="fallback_reason")
    coded_meta.clear()
    text_codes: dict[str, TextCodes] = {}
    features = _frame(part.features, part.feature_keys, n, text_codes)
    return WindowFrames(
        pd.DataFrame(meta, index=index, copy=False),
        features,
        _frame(part.probabilities, part.proba_keys, n),
        pd.Series(labels, index=index, dtype=object, name="label"),
        fallback,
        text_codes,
        label_codes,
        prediction_codes,
        version_codes,
    )


def _label_codes(coded: Coded, labels: np.ndarray | None = None,
                 late_at: np.ndarray | None = None) -> TextCodes | None:
    """Each row's ``label_text`` as codes into its distinct texts, when the read knows it
    from the codes without looking at the values: ints in a short range, or texts (a
    classifier's labels and predictions), with nulls; and so are those stored since the
    block (``labels`` at ``late_at``, the values that replaced the block's: ints or
    None). Else None (the caller converts the values)."""
    from monitor.schema import int_label_codes

    codes = coded.codes
    late_values = labels[late_at].tolist() if late_at is not None and labels is not None \
        else []
    kinds = kinds_of(codes)
    if kinds <= {MISSING, NONE, INT}:
        if any(v is not None and (type(v) is not int or not -2**63 <= v < 2**63)
               for v in late_values):
            return None
        has = codes == INT
        # Full length: the slots of other rows hold anything (``int_label_codes`` skips
        # them).
        values = coded.i if coded.i is not None else np.zeros(len(codes), dtype=np.int64)
        if late_at is not None:
            values = values.copy()
            has[late_at] = [v is not None for v in late_values]
            values[late_at] = [0 if v is None else v for v in late_values]
        return int_label_codes(values, has)
    if late_at is not None or not kinds <= {MISSING, NONE, STR}:
        return None
    return _text_codes(coded)  # texts are their own labels (and no floats among them)


# --- the table -------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    id: int
    lo: int
    hi: int
    rows: int
    labels_hw: int


def fetch_all(raw: Any, sql: str, params: Sequence[Any], *, blobs: bool = False
              ) -> list[Any]:
    """The rows of one query on a driver connection. ``blobs``: rows of a block's bytes,
    asked for in binary on PostgreSQL (as text, hex doubles the bytes and decoding them
    took 0.3-0.4 s per million rows' blocks; 0.1 s in binary)."""
    import sqlite3

    cur = raw.cursor()
    try:
        if blobs and not isinstance(raw, sqlite3.Connection):
            cur.execute(sql, params, binary=True)
        else:
            cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


# The model's blocks, by lo_id: answered from ``ix_log_blocks_model_marks`` alone.
BLOCKS_SQL = ("SELECT id, lo_id, hi_id, rows, labels_hw FROM log_blocks WHERE model = {mark} "
              "ORDER BY lo_id")


def _blocks(raw: Any, mark: str, model: str) -> list[_Block]:
    return [_Block(*row) for row in fetch_all(raw, BLOCKS_SQL.format(mark=mark), [model])]


def _uncovered(blocks: Sequence[_Block], top: int = _TOP) -> list[tuple[int, int]]:
    """Id ranges (lo, hi] that no block covers, up to ``top``."""
    gaps, at = [], 0
    for block in blocks:
        if block.lo > at:
            gaps.append((at, block.lo))
        at = max(at, block.hi)
    if at < top:
        gaps.append((at, top))
    return gaps


def _us(value: datetime) -> int:
    if value.tzinfo is None:  # naive times are UTC, as everywhere in the store
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


