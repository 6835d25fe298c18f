"""Log blocks: a columnar copy of mqm's own log table, so a window reads in a fraction
of the time it takes to parse its rows.

The rows of ``inference_logs`` keep the features exactly as received, as JSON, and
parsing a million of them takes seconds. A *block* holds the rows of one model with
``lo_id < id <= hi_id`` already parsed and coded by ``monitor.store.columnar`` (Arrow
IPC, LZ4), and, apart, their labels as of ground_truth id ``labels_hw``. The
*compactor* (``compact``: ``mqm compact``, and a job of ``mqm serve`` that runs often
and before each check) writes blocks for rows no block covers yet, filling the newest
block up to ``BLOCK_ROWS`` before it starts another, and brings the blocks' labels up
to date.

A read of a window (``read_window``) takes, in one snapshot of the database:

- the blocks whose time range meets the window, cut to the window;
- the window's rows that no block covers (the newest ones) from the rows themselves;
- labels stored after a block's ``labels_hw``, joined in SQL.

It counts the window's rows in SQL too. If blocks and rows disagree (rows deleted or
inserted by hand below the covered ids), the read falls back to the rows, and the
blocks that disagree are deleted so that the compactor builds them again. Blocks are
derived data: deleting them all loses nothing.

Row ids are assigned in commit order on SQLite (one writer at a time). On PostgreSQL a
transaction can commit after a later one, so the compactor first takes a SHARE lock on
both tables for a moment: it waits for writes in flight, and every id below the
largest one it then reads is committed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.store.columnar import MISSING, Coded, concat, decode, decode_objects, encode
from monitor.store.reading import (
    _NAN,
    WindowBuilder,
    WindowFrames,
    _bound,
    _times,
    _window_sql,
    driver_errors,
    fetch_into,
    gc_paused,
    loads_each,
)
from monitor.store.tables import log_blocks

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BLOCK_ROWS", "CompactResult", "Part", "compact", "delete_blocks", "read_window",
           "window_chunks"]

FORMAT = 1
BLOCK_ROWS = 200_000  # rows per block: a block decodes in tens of milliseconds
NAT = np.iinfo(np.int64).min  # no time (no label yet)
_TOP = 2**62  # an id above every row's
_META = ("request_id", "model_version", "prediction", "latency_ms", "error", "error_message",
         "fallback_reason")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_log = logging.getLogger("mqm.blocks")


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

    def take(self, index: np.ndarray) -> Part:
        return Part(self.ids[index], self.ts[index],
                    {k: v.take(index) for k, v in self.meta.items()},
                    {k: v.take(index) for k, v in self.features.items()},
                    {k: v.take(index) for k, v in self.probabilities.items()},
                    self.labels.take(index), self.label_time[index],
                    self.feature_keys.take(index), self.proba_keys.take(index))


def _micros(values: Sequence[Any]) -> np.ndarray:
    times = _times(list(values))
    out = times.asi8 // 1000
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


# --- Arrow form --------------------------------------------------------------------


def _ipc(names: list[str], arrays: list[Any], metadata: dict[str, str]) -> bytes:
    import pyarrow as pa

    table = pa.table(dict(zip(names, arrays, strict=True)), metadata=metadata)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _columns(data: bytes) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    return ({name: table.column(name).combine_chunks() for name in table.column_names},
            table.schema.metadata or {})


def encode_part(part: Part) -> tuple[bytes, bytes]:
    """(rows, labels) of a part as two Arrow IPC streams."""
    return encode_rows(part), encode_labels(part)


def encode_labels(part: Part) -> bytes:
    import pyarrow as pa

    from monitor.store.columnar import to_arrow

    n, a = to_arrow("label", part.labels)
    return _ipc(["label_time", *n], [pa.array(part.label_time, type=pa.int64()), *a],
                {"format": str(FORMAT)})


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


def decode_part(data: bytes, labels: bytes) -> Part:
    from monitor.store.columnar import from_arrow

    columns, metadata = _columns(data)
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
    label_columns, _ = _columns(labels)
    label_time = label_columns.pop("label_time").to_numpy()
    return Part(ids, ts, groups["m"], groups["f"], groups["p"], from_arrow(label_columns)["label"],
                label_time, feature_keys, proba_keys)


# --- frames ------------------------------------------------------------------------


def _in_order(ids: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """Positions that put rows in (ts, id) order, the row reader's; None if they are."""
    if len(ts) < 2:
        return None
    dt, di = np.diff(ts), np.diff(ids)
    if ((dt > 0) | ((dt == 0) & (di > 0))).all():
        return None
    return np.lexsort((ids, ts))


def _frame(columns: dict[str, Coded], keys: KeyOrders, n: int) -> pd.DataFrame:
    import pandas as pd

    data = {name: decode(columns[name]) for name in keys.columns(columns)}
    return pd.DataFrame(data, index=pd.RangeIndex(n), copy=False)


def _index(micros: np.ndarray) -> pd.DatetimeIndex:
    import pandas as pd

    stamps = micros.astype("datetime64[us]")
    stamps[micros == NAT] = np.datetime64("NaT")
    return pd.DatetimeIndex(stamps.astype("datetime64[ns]")).tz_localize("UTC")


def frames_of(part: Part, late: Sequence[tuple[int, Any, Any]] = ()) -> WindowFrames:
    """The frames the row reader builds from the same rows; ``late`` labels (row id,
    label JSON text, label time as the driver gives it) are applied on top."""
    import pandas as pd

    order = _in_order(part.ids, part.ts)
    if order is not None:
        part = part.take(order)
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
    meta = {
        "request_id": decode(part.meta["request_id"]), "ts": _index(part.ts),
        "model_version": decode(part.meta["model_version"]),
        "prediction": decode(part.meta["prediction"]),
        "latency_ms": decode(part.meta["latency_ms"]), "error": decode(part.meta["error"]),
        "error_message": decode(part.meta["error_message"]), "label_time": _index(label_time),
    }
    return WindowFrames(
        pd.DataFrame(meta, index=index, copy=False),
        _frame(part.features, part.feature_keys, n),
        _frame(part.probabilities, part.proba_keys, n),
        pd.Series(labels, index=index, dtype=object, name="label"),
        pd.Series(decode_objects(part.meta["fallback_reason"]), index=index, dtype=object,
                  name="fallback_reason"),
    )


# --- reading a window --------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    id: int
    lo: int
    hi: int
    rows: int
    labels_hw: int


def _blocks(raw: Any, mark: str, model: str) -> list[_Block]:
    cur = raw.cursor()
    try:
        cur.execute(f"SELECT id, lo_id, hi_id, rows, labels_hw FROM log_blocks "
                    f"WHERE model = {mark} ORDER BY lo_id", [model])
        return [_Block(*row) for row in cur.fetchall()]
    finally:
        cur.close()


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


def _marks(dialect: str) -> tuple[str, str]:
    return ("?", "") if dialect == "sqlite" else ("%s", "::text")


def _snapshot(raw: Any, sqlite: bool) -> None:
    """Every query after this sees the database as of one moment."""
    if sqlite:
        raw.execute("BEGIN")
    else:
        raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        raw.execute("SET LOCAL jit = off")


def _late_labels(raw: Any, dialect: str, model: str, after: int, start: Any, end: Any
                 ) -> list[tuple[int, Any, Any]]:
    mark, text = _marks(dialect)
    cur = raw.cursor()
    try:
        # CROSS JOIN: SQLite then starts from the few labels after ``after``, not from
        # the window's rows (0.6 s per million); PostgreSQL plans it as any join.
        cur.execute(
            f"SELECT l.id, COALESCE(g.label{text}, 'null'), g.ts FROM ground_truth AS g "
            "CROSS JOIN inference_logs AS l WHERE l.model = g.model "
            f"AND l.request_id = g.request_id AND g.model = {mark} AND g.id > {mark} "
            f"AND l.ts >= {mark} AND l.ts < {mark}",
            [model, after, start, end])
        return [tuple(row) for row in cur.fetchall()]
    finally:
        cur.close()


def read_window(engine: Engine, model: str, start: datetime, end: datetime
                ) -> WindowFrames | None:
    """The window from blocks and the rows they do not cover; None when no block meets
    the window, or when blocks and rows disagree (then the blocks that disagree are
    deleted). The caller then reads the rows."""
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    mark, _ = _marks(dialect)
    low, high = _bound(start, sqlite), _bound(end, sqlite)
    stale: list[int] = []
    late: list[tuple[int, Any, Any]] = []
    with engine.connect() as conn, driver_errors(engine, "reading log blocks"):
        raw = conn.connection.driver_connection
        _snapshot(raw, sqlite)
        blocks = _blocks(raw, mark, model)
        if not blocks:
            return None
        cur = raw.cursor()
        try:
            # In index order: ordering by anything else sorts the blobs themselves.
            cur.execute(f"SELECT id, data, labels FROM log_blocks WHERE model = {mark} "
                        f"AND ts_min < {mark} AND ts_max >= {mark} ORDER BY ts_min",
                        [model, high, low])
            found = cur.fetchall()
            if not found:
                return None
            cur.execute(f"SELECT count(*) FROM inference_logs WHERE model = {mark} "
                        f"AND ts >= {mark} AND ts < {mark}", [model, low, high])
            (total,) = cur.fetchone()
        finally:
            cur.close()
        low_us, high_us = _us(start), _us(end)
        parts = []
        for _, data, labels in found:
            part = decode_part(data, labels)
            keep = (part.ts >= low_us) & (part.ts < high_us)
            parts.append(part if keep.all() else part.take(keep))
        gaps = _uncovered(blocks)
        builder = WindowBuilder(key_orders=True)
        fetch_into(raw, sqlite, _window_sql(dialect, False, False, id_ranges=len(gaps)),
                   [model, low, high, *(b for gap in gaps for b in gap)], builder)
        if builder.rows:
            parts.append(part_of(builder))
        part = concat_parts(parts)
        if len(part) != total:
            # Blocks that disagree with the rows; all of the window's if none can be
            # named (a block read twice leaves no odd id).
            stale = _disagreeing(raw, mark, model, low, high, part.ids, blocks) or \
                [block_id for block_id, _, _ in found]
        else:
            by_id = {b.id: b for b in blocks}
            after = min(by_id[block_id].labels_hw for block_id, _, _ in found)
            late = _late_labels(raw, dialect, model, after, low, high)
    if stale:
        _log.warning("mqm: %d log block(s) of %s disagree with inference_logs (rows deleted "
                     "or inserted by hand?); read from the rows, to be compacted again",
                     len(stale), model)
        delete_blocks(engine, model, stale)
        return None
    with gc_paused():
        return frames_of(part, late)


def window_chunks(engine: Engine, model: str, start: datetime, end: datetime,
                  chunk_rows: int) -> Iterator[WindowFrames] | None:
    """The window in chunks of at most ``chunk_rows`` rows, from blocks and the rows
    they do not cover, with bounded memory (one block at a time); None as for
    ``read_window``, checked before the first chunk.

    Rows are in (ts, id) order within a chunk; chunks follow the blocks, then the
    uncovered rows. One snapshot of the database serves all chunks, so the connection
    stays open until the iterator is exhausted or closed.
    """
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    mark, _ = _marks(dialect)
    low, high = _bound(start, sqlite), _bound(end, sqlite)
    low_us, high_us = _us(start), _us(end)
    conn = engine.connect()
    try:
        with driver_errors(engine, "reading log blocks"):
            raw = conn.connection.driver_connection
            _snapshot(raw, sqlite)
            blocks = _blocks(raw, mark, model)
            cur = raw.cursor()
            try:
                cur.execute(f"SELECT id, ts_min, ts_max FROM log_blocks WHERE model = {mark} "
                            f"AND ts_min < {mark} AND ts_max >= {mark} ORDER BY ts_min",
                            [model, high, low])
                found = cur.fetchall()
                if not found:
                    conn.close()
                    return None
                cur.execute(f"SELECT count(*) FROM inference_logs WHERE model = {mark} "
                            f"AND ts >= {mark} AND ts < {mark}", [model, low, high])
                (total,) = cur.fetchone()
                gaps = _uncovered(blocks)
                where = " OR ".join([f"(id > {mark} AND id <= {mark})"] * len(gaps))
                cur.execute(f"SELECT count(*) FROM inference_logs WHERE model = {mark} "
                            f"AND ts >= {mark} AND ts < {mark} AND ({where})",
                            [model, low, high, *(b for gap in gaps for b in gap)])
                (uncovered,) = cur.fetchone()
            finally:
                cur.close()
            # Blocks wholly inside the window count whole; the others are cut to it.
            by_id = {b.id: b for b in blocks}
            inside = 0
            for block_id, ts_min, ts_max in found:
                if _aware(ts_min) >= start and _aware(ts_max) < end:
                    inside += by_id[block_id].rows
                else:
                    part = _fetch(raw, mark, block_id)
                    inside += int(((part.ts >= low_us) & (part.ts < high_us)).sum())
            if inside + uncovered != total:
                conn.close()
                _log.warning("mqm: log blocks of %s disagree with inference_logs in %s .. %s; "
                             "read from the rows, to be compacted again", model, start, end)
                delete_blocks(engine, model, [block_id for block_id, _, _ in found])
                return None
            after = min(by_id[block_id].labels_hw for block_id, _, _ in found)
            late = _late_labels(raw, dialect, model, after, low, high)
    except BaseException:
        conn.close()
        raise
    return _chunks(engine, conn, raw, model, [b for b, _, _ in found], late, gaps,
                   (low, high, low_us, high_us), chunk_rows)


def _aware(value: Any) -> datetime:
    from monitor.store.logs import parse_time

    return parse_time("ts", value)


def _fetch(raw: Any, mark: str, block_id: int) -> Part:
    cur = raw.cursor()
    try:
        cur.execute(f"SELECT data, labels FROM log_blocks WHERE id = {mark}", [block_id])
        data, labels = cur.fetchone()
    finally:
        cur.close()
    return decode_part(data, labels)


def _chunks(engine: Engine, conn: Any, raw: Any, model: str, block_ids: list[int],
            late: list[tuple[int, Any, Any]], gaps: list[tuple[int, int]],
            bounds: tuple[Any, Any, int, int], chunk_rows: int) -> Iterator[WindowFrames]:
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    mark, _ = _marks(dialect)
    low, high, low_us, high_us = bounds
    try:
        with driver_errors(engine, "reading log blocks"):
            for block_id in block_ids:
                part = _fetch(raw, mark, block_id)
                keep = (part.ts >= low_us) & (part.ts < high_us)
                part = part if keep.all() else part.take(keep)
                order = _in_order(part.ids, part.ts)
                if order is not None:
                    part = part.take(order)
                for at in range(0, len(part), chunk_rows):
                    piece = part.take(np.arange(at, min(at + chunk_rows, len(part))))
                    with gc_paused():
                        frames = frames_of(piece, late)
                    yield frames
            sql = _window_sql(dialect, True, True, id_ranges=len(gaps))
            position: tuple[Any, int] | None = None
            while True:
                builder = WindowBuilder()
                after = position or (low, -1)
                params = [model, after[0], high, *(b for gap in gaps for b in gap),
                          after[0], after[1], chunk_rows]
                position = fetch_into(raw, sqlite, sql, params, builder)
                if builder.rows:
                    with gc_paused():
                        frames = builder.build()
                    yield frames
                if builder.rows < chunk_rows:
                    return
    finally:
        conn.close()


def _disagreeing(raw: Any, mark: str, model: str, low: Any, high: Any, have: np.ndarray,
                 blocks: Sequence[_Block]) -> list[int]:
    """Blocks holding rows that are gone, or covering rows they lack."""
    cur = raw.cursor()
    try:
        cur.execute(f"SELECT id FROM inference_logs WHERE model = {mark} AND ts >= {mark} "
                    f"AND ts < {mark}", [model, low, high])
        stored = np.array([row[0] for row in cur.fetchall()], dtype=np.int64)
    finally:
        cur.close()
    odd = np.setxor1d(stored, have)
    his = np.array([b.hi for b in blocks], dtype=np.int64)
    los = np.array([b.lo for b in blocks], dtype=np.int64)
    at = np.searchsorted(his, odd)  # the first block whose hi >= id
    inside = (at < len(blocks))
    inside[inside] &= los[at[inside]] < odd[inside]
    return sorted({blocks[k].id for k in at[inside]})


def delete_blocks(engine: Engine, model: str, ids: Sequence[int] | None = None) -> int:
    """Delete some (or all) of a model's blocks; the compactor builds them again."""
    t = log_blocks
    query = sa.delete(t).where(t.c.model == model)
    if ids is not None:
        query = query.where(t.c.id.in_(list(ids)))
    with engine.begin() as conn:
        return conn.execute(query).rowcount


# --- compaction --------------------------------------------------------------------


@dataclass
class CompactResult:
    model: str
    rows: int = 0  # rows written into blocks
    blocks: int = 0  # blocks written or grown
    labels: int = 0  # blocks whose labels were brought up to date
    seconds: float = 0.0


def _high_marks(engine: Engine) -> tuple[int, int]:
    """The largest log and label ids such that every smaller id is committed."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Waits for inserts in flight, and holds new ones back for as long: at most
            # a second (a long load makes this compaction fail, and the next one retry).
            conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            conn.exec_driver_sql("LOCK TABLE inference_logs, ground_truth IN SHARE MODE")
        logs = conn.exec_driver_sql("SELECT max(id) FROM inference_logs").scalar()
        labels = conn.exec_driver_sql("SELECT max(id) FROM ground_truth").scalar()
    return int(logs or 0), int(labels or 0)


def _read_rows(engine: Engine, model: str, lo: int, hi: int, limit: int) -> WindowBuilder:
    dialect = engine.dialect.name
    builder = WindowBuilder(key_orders=True)
    with engine.connect() as conn, driver_errors(engine, "reading inference logs"):
        raw = conn.connection.driver_connection
        if dialect != "sqlite":
            raw.execute("SET LOCAL jit = off")
        fetch_into(raw, dialect == "sqlite", _window_sql(dialect, False, False, by_id=True),
                   [model, lo, hi, limit], builder)
    return builder


def _times_of(part: Part) -> tuple[datetime, datetime]:
    low, high = int(part.ts.min()), int(part.ts.max())
    return _EPOCH + timedelta(microseconds=low), _EPOCH + timedelta(microseconds=high)


def _us(value: datetime) -> int:
    if value.tzinfo is None:  # naive times are UTC, as everywhere in the store
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def compact(engine: Engine, model: str, *, block_rows: int = BLOCK_ROWS,
            now: datetime | None = None) -> CompactResult:
    """Write blocks for the model's rows that no block covers, and bring the blocks'
    labels up to date. Safe to run while others write rows or compact: a block that
    another compactor wrote first makes this one stop (it finds the rows covered next
    time)."""
    t0 = time.perf_counter()
    result = CompactResult(model)
    top, labels_hw = _high_marks(engine)
    with engine.connect() as conn:
        blocks = _blocks(conn.connection.driver_connection, _marks(engine.dialect.name)[0],
                         model)
    for lo, hi in _uncovered(blocks, top):
        last = blocks[-1] if blocks and blocks[-1].hi == lo else None
        while lo < hi:
            room = block_rows - last.rows if last is not None and last.rows < block_rows \
                else block_rows
            builder = _read_rows(engine, model, lo, hi, room)
            if not builder.rows:
                break
            new = part_of(builder)
            end = hi if builder.rows < room else int(new.ids[-1])
            grow = last is not None and last.rows < block_rows
            if not _store(engine, model, new, lo, end, labels_hw, last if grow else None,
                          now):
                return result  # another compactor got there first
            result.rows += len(new)
            result.blocks += 1
            last = None
            lo = end
    result.labels = _refresh_labels(engine, model, labels_hw, now)
    result.seconds = time.perf_counter() - t0
    return result


def _store(engine: Engine, model: str, new: Part, lo: int, hi: int, labels_hw: int,
           grow: _Block | None, now: datetime | None) -> bool:
    """Insert a block for ``new`` (rows lo < id <= hi), or append them to ``grow``."""
    t = log_blocks
    stamp = now or datetime.now(UTC)
    try:
        return _write(engine, t, model, new, lo, hi, labels_hw, grow, stamp)
    except sa.exc.IntegrityError:  # another compactor wrote this block first
        return False


class _Lost(Exception):
    """Another compactor covered some of the rows first: roll back."""


def _write(engine: Engine, t: sa.Table, model: str, new: Part, lo: int, hi: int,
           labels_hw: int, grow: _Block | None, stamp: datetime) -> bool:
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # a model's block writes one at a time
                from monitor.leader import advisory_key

                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": advisory_key(f"mqm-log-blocks:{model}")})
            if grow is not None:
                data, labels = conn.execute(sa.select(t.c.data, t.c.labels).where(
                    t.c.id == grow.id)).one()
                new = concat_parts([decode_part(data, labels), new])
                labels_hw = min(labels_hw, grow.labels_hw)
            rows, label_blob = encode_part(new)
            ts_min, ts_max = _times_of(new)
            values = {"hi_id": hi, "rows": len(new), "ts_min": ts_min, "ts_max": ts_max,
                      "format": FORMAT, "data": rows, "labels": label_blob,
                      "labels_hw": labels_hw, "updated_at": stamp}
            if grow is not None:
                own = grow.id
                if conn.execute(sa.update(t).where(t.c.id == grow.id, t.c.hi_id == grow.hi)
                                .values(**values)).rowcount != 1:
                    raise _Lost
            else:
                own = conn.execute(sa.insert(t).values(
                    model=model, lo_id=lo, created_at=stamp, **values)).inserted_primary_key[0]
            # Checked after the write, which holds SQLite's write lock: no compactor can
            # slip a block in between.
            if conn.execute(sa.select(sa.func.count()).select_from(t).where(
                    t.c.model == model, t.c.lo_id < hi, t.c.hi_id > lo,
                    t.c.id != own)).scalar_one():
                raise _Lost
    except _Lost:
        return False
    return True


LABEL_BATCH = 200_000  # labels taken into blocks per transaction: bounds memory


def _refresh_labels(engine: Engine, model: str, labels_hw: int, now: datetime | None) -> int:
    """Labels stored since each block's ``labels_hw`` written into it, in batches of
    ``LABEL_BATCH`` labels (a bulk load of labels stays bounded in memory); returns the
    number of block updates."""
    touched = 0
    while True:
        done, changed = _refresh_batch(engine, model, labels_hw, now)
        touched += changed
        if done:
            return touched


def _refresh_batch(engine: Engine, model: str, labels_hw: int, now: datetime | None
                   ) -> tuple[bool, int]:
    t = log_blocks
    mark, text = _marks(engine.dialect.name)
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        blocks = _blocks(raw, mark, model)
        after = min((b.labels_hw for b in blocks), default=labels_hw)
        if after >= labels_hw:
            return True, 0
        cur = raw.cursor()
        try:
            # From ground_truth's id range (CROSS JOIN fixes the order on SQLite), the
            # oldest first, so that a batch ends at a label id every block can move to.
            cur.execute(
                f"SELECT g.id, l.id, COALESCE(g.label{text}, 'null'), g.ts "
                "FROM ground_truth AS g CROSS JOIN inference_logs AS l "
                f"WHERE l.model = g.model AND l.request_id = g.request_id AND g.model = {mark}"
                f" AND g.id > {mark} AND g.id <= {mark} ORDER BY g.id LIMIT {mark}",
                [model, after, labels_hw, LABEL_BATCH])
            late = cur.fetchall()
        finally:
            cur.close()
        upto = int(late[-1][0]) if len(late) == LABEL_BATCH else labels_hw
        his = np.array([b.hi for b in blocks], dtype=np.int64)
        by_block: dict[int, list[tuple[int, Any, Any]]] = {}
        for _, log_id, label, when in late:
            k = int(np.searchsorted(his, log_id))
            if k < len(blocks) and blocks[k].lo < log_id and blocks[k].labels_hw < upto:
                by_block.setdefault(k, []).append((log_id, label, when))
        stamp = now or datetime.now(UTC)
        for k, rows in by_block.items():
            block = blocks[k]
            data, labels = conn.execute(sa.select(t.c.data, t.c.labels).where(
                t.c.id == block.id)).one()
            part = decode_part(data, labels)
            positions = np.searchsorted(part.ids, [r[0] for r in rows])
            values = decode_objects(part.labels)
            values[positions] = np.fromiter(loads_each([r[1] for r in rows]), dtype=object,
                                            count=len(rows))
            part.labels = encode(values.tolist())
            part.label_time = part.label_time.copy()
            part.label_time[positions] = _micros([r[2] for r in rows])
            conn.execute(sa.update(t).where(t.c.id == block.id).values(
                labels=encode_labels(part), labels_hw=upto, updated_at=stamp))
        conn.execute(sa.update(t).where(t.c.model == model, t.c.labels_hw < upto)
                     .values(labels_hw=upto))
    return upto >= labels_hw, len(by_block)
