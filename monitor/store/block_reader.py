"""Reading a window from log blocks (see ``monitor.store.blocks``).

A read takes, in one snapshot of the database:

- the blocks whose time range meets the window, cut to the window;
- the window's rows that no block covers (the newest ones) from the rows themselves;
- labels stored after a block's ``labels_hw``, joined in SQL.

It counts the window's rows in SQL too. If blocks and rows disagree (rows deleted or
inserted by hand below the covered ids), the read falls back to the rows, and the
blocks that disagree are deleted so that the compactor builds them again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.store.blocks import (
    Part,
    PartFiller,
    _Block,
    _blocks,
    _in_order,
    _uncovered,
    _us,
    decode_part,
    fetch_all,
    frames_of,
    part_of,
)
from monitor.store.db import driver_connection
from monitor.store.frames import WindowBuilder, WindowFrames, free_memory, gc_paused
from monitor.store.reading import (
    _bound,
    _window_sql,
    driver_errors,
    fetch_into,
    id_ranges_sql,
    sql_marks,
)
from monitor.store.tables import log_blocks
from monitor.times import parse_time

if TYPE_CHECKING:
    pass

__all__ = ["TooMany", "delete_blocks", "read_window", "window_chunks"]

# --- reading a window --------------------------------------------------------------


_log = logging.getLogger("mqm.blocks")


def _snapshot(raw: Any, sqlite: bool) -> None:
    """Every query after this sees the database as of one moment."""
    if sqlite:
        raw.execute("BEGIN")
    else:
        raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        raw.execute("SET LOCAL jit = off")


def _late_labels(raw: Any, dialect: str, model: str, after: int, start: Any, end: Any
                 ) -> list[tuple[int, Any, Any]]:
    mark, text = sql_marks(dialect)
    # CROSS JOIN: SQLite then starts from the few labels after ``after``, not from
    # the window's rows (0.6 s per million); PostgreSQL plans it as any join.
    return [tuple(row) for row in fetch_all(
        raw, f"SELECT l.id, COALESCE(g.label{text}, 'null'), g.ts FROM ground_truth AS g "
        "CROSS JOIN inference_logs AS l WHERE l.model = g.model "
        f"AND l.request_id = g.request_id AND g.model = {mark} AND g.id > {mark} "
        f"AND l.ts >= {mark} AND l.ts < {mark}", [model, after, start, end])]


def _count(raw: Any, mark: str, model: str, low: Any, high: Any,
           gaps: Sequence[tuple[int, int]] = ()) -> int:
    """Rows of the window (only those with ids in ``gaps``, if given)."""
    sql = (f"SELECT count(*) FROM inference_logs WHERE model = {mark} AND ts >= {mark} "
           f"AND ts < {mark}" + id_ranges_sql(mark, len(gaps)))
    return int(fetch_all(raw, sql, [model, low, high, *(b for g in gaps for b in g)])[0][0])


def _meeting(raw: Any, mark: str, model: str, low: Any, high: Any, columns: str
             ) -> list[Any]:
    """``columns`` of the model's blocks that meet the window, in index order (ordering
    by anything else makes SQLite sort the blobs themselves)."""
    return fetch_all(raw, f"SELECT {columns} FROM log_blocks WHERE model = {mark} "
                     f"AND ts_min < {mark} AND ts_max >= {mark} ORDER BY ts_min",
                     [model, high, low])


@dataclass(frozen=True)
class TooMany:
    """A window of more rows than the caller reads whole (``read_window``'s
    ``at_most``): its row count, of the read's snapshot; nothing was fetched."""

    rows: int


@overload
def read_window(engine: Engine, model: str, start: datetime, end: datetime,
                skip: Collection[str] = (), at_most: None = None) -> WindowFrames | None: ...


@overload
def read_window(engine: Engine, model: str, start: datetime, end: datetime,
                skip: Collection[str] = (), *, at_most: int
                ) -> WindowFrames | TooMany | None: ...


def read_window(engine: Engine, model: str, start: datetime, end: datetime,
                skip: Collection[str] = (), at_most: int | None = None
                ) -> WindowFrames | TooMany | None:
    """The window from blocks and the rows they do not cover; None when no block meets
    the window, or when blocks and rows disagree (then the blocks that disagree are
    deleted). The caller then reads the rows. ``skip``: meta columns the caller does not
    read, left out of ``meta`` and not decoded. ``at_most``: a window of more rows is
    not read, its count is returned (``TooMany``), so that a caller choosing between a
    whole read and chunks counts the window once, with the read's own count."""
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    mark, _ = sql_marks(dialect)
    low, high = _bound(start, sqlite), _bound(end, sqlite)
    low_us, high_us = _us(start), _us(end)
    stale: list[int] = []
    with engine.connect() as conn, driver_errors(engine, "reading log blocks"), \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqm-fetch") as pool:
        raw = driver_connection(conn)
        _snapshot(raw, sqlite)
        blocks = _blocks(raw, mark, model)
        if not blocks:
            return None
        found = [block_id for (block_id,) in _meeting(raw, mark, model, low, high, "id")]
        if not found:
            return None
        wanted = set(found)
        meeting = [block for block in blocks if block.id in wanted]
        room = sum(block.rows for block in meeting)  # before their cut
        # Up to the table's largest id, in this read's snapshot: a window whose rows
        # blocks cover all has no gap, and its rows are not searched at all (PostgreSQL
        # without statistics, right after a large load, searched the window by time and
        # filtered every row by id: 0.27 s per million rows).
        gaps = _uncovered(blocks, _max_id(raw))
        total: int | None = None
        if at_most is not None and room + sum(hi - lo for lo, hi in gaps) > at_most:
            total = _count(raw, mark, model, low, high)  # maybe too many: count first
            if total > at_most:
                return TooMany(total)
        # The rows no block covers (the newest) come first, so that the window's arrays
        # are sized from the blocks' own row counts and these rows, not from a count.
        newest = _uncovered_rows(raw, dialect, model, low, high, gaps, room, skip)
        filler = PartFiller(room + (len(newest) if newest is not None else 0))
        # A block at a time (about 16 MB compressed) is decoded and copied into the
        # window's arrays, then goes, while the second thread fetches the next one: the
        # database's work and the decoding overlap (both let go of the GIL). The
        # connection is the fetching thread's alone until the loop ends.
        ahead = pool.submit(_fetch_bytes, raw, mark, found[0])
        for at in range(len(found)):
            data, labels = ahead.result()
            if at + 1 < len(found):
                ahead = pool.submit(_fetch_bytes, raw, mark, found[at + 1])
            block = decode_part(data, labels, skip)
            del data, labels
            filler.add(_cut(block, low_us, high_us))
            del block
        if newest is not None:
            filler.add(newest)
            del newest
        frames = None
        if filler.count <= filler.rows:
            part = filler.part()
            del filler  # it holds the coded columns that the frames drop once decoded
            ids = part.ids
            late = _late_labels(raw, dialect, model,
                                min(block.labels_hw for block in meeting), low, high)
            # The count checks the read, on the second thread while this one builds the
            # frames (first, it was a pass over the window's index before the read).
            counting = pool.submit(_count, raw, mark, model, low, high) if total is None \
                else None
            free_memory()  # the blocks' buffers, before the frames take their place
            with gc_paused():
                frames = frames_of(part, late, skip)
            del part
            if counting is not None:
                total = counting.result()
        else:
            ids = filler.ids()
            del filler
        if frames is None or len(ids) != total:
            # Blocks that disagree with the rows; all of the window's if none can be
            # named (a block read twice leaves no odd id).
            frames = None
            stale = _disagreeing(raw, mark, model, low, high, ids, blocks) or found
    if stale:
        _log.warning("mqm: %d log block(s) of %s disagree with inference_logs (rows deleted "
                     "or inserted by hand?); read from the rows, to be compacted again",
                     len(stale), model)
        delete_blocks(engine, model, stale)
        return None
    free_memory()  # the coded columns the frames did not keep
    return frames


def _uncovered_rows(raw: Any, dialect: str, model: str, low: Any, high: Any,
                    gaps: Sequence[tuple[int, int]], room: int, skip: Collection[str]
                    ) -> Part | None:
    """The window's rows with ids in ``gaps`` (no block covers them), None for none.
    ``room``: the rows of the blocks meeting the window; on SQLite, gaps no wider than
    that are searched by id rather than by time."""
    if not gaps:
        return None
    sqlite = dialect == "sqlite"
    builder = WindowBuilder(key_orders=True)
    by_rowid = sqlite and sum(hi - lo for lo, hi in gaps) <= room
    fetch_into(raw, sqlite, _window_sql(dialect, False, False, id_ranges=len(gaps),
                                        by_rowid=by_rowid),
               [model, low, high, *(b for gap in gaps for b in gap)], builder)
    if not builder.rows:
        return None
    rows = part_of(builder)
    for name in skip:
        rows.meta.pop(name, None)
    return rows


def window_chunks(engine: Engine, model: str, start: datetime, end: datetime,
                  chunk_rows: int) -> Generator[WindowFrames, None, None] | None:
    """The window in chunks of at most ``chunk_rows`` rows, from blocks and the rows
    they do not cover, with bounded memory (one block at a time); None as for
    ``read_window``, checked before the first chunk.

    Rows are in (ts, id) order within a chunk; chunks follow the blocks, then the
    uncovered rows. One snapshot of the database serves all chunks, so the connection
    stays open until the iterator is exhausted or closed.
    """
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    mark, _ = sql_marks(dialect)
    low, high = _bound(start, sqlite), _bound(end, sqlite)
    low_us, high_us = _us(start), _us(end)
    conn = engine.connect()
    try:
        with driver_errors(engine, "reading log blocks"):
            raw = driver_connection(conn)
            _snapshot(raw, sqlite)
            blocks = _blocks(raw, mark, model)
            found = _meeting(raw, mark, model, low, high, "id, ts_min, ts_max")
            if not found:
                conn.close()
                return None
            total = _count(raw, mark, model, low, high)
            gaps = _uncovered(blocks)
            uncovered = _count(raw, mark, model, low, high, gaps)
            # Blocks wholly inside the window count whole; the others are cut to it.
            by_id = {b.id: b for b in blocks}
            inside = 0
            for block_id, ts_min, ts_max in found:
                first, last = _us(parse_time("ts", ts_min)), _us(parse_time("ts", ts_max))
                if first >= low_us and last < high_us:
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



def _cut(part: Part, low_us: int, high_us: int) -> Part:
    """The block's rows with low <= ts < high."""
    keep = (part.ts >= low_us) & (part.ts < high_us)
    return part if keep.all() else part.take(keep)


def _fetch(raw: Any, mark: str, block_id: int) -> Part:
    """A block's rows."""
    return decode_part(*_fetch_bytes(raw, mark, block_id))


def _fetch_bytes(raw: Any, mark: str, block_id: int) -> tuple[bytes, bytes]:
    """A block's bytes as stored: its rows, its labels."""
    ((data, labels),) = fetch_all(
        raw, f"SELECT data, labels FROM log_blocks WHERE id = {mark}", [block_id],
        blobs=True)
    return data, labels


def _max_id(raw: Any) -> int:
    """The table's largest row id (0 for none): no row lies above it."""
    ((top,),) = fetch_all(raw, "SELECT max(id) FROM inference_logs", [])
    return int(top or 0)


def _chunks(engine: Engine, conn: Any, raw: Any, model: str, block_ids: list[int],
            late: list[tuple[int, Any, Any]], gaps: list[tuple[int, int]],
            bounds: tuple[Any, Any, int, int], chunk_rows: int
            ) -> Generator[WindowFrames, None, None]:
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    mark, _ = sql_marks(dialect)
    low, high, low_us, high_us = bounds
    try:
        with driver_errors(engine, "reading log blocks"):
            for block_id in block_ids:
                part = _fetch(raw, mark, block_id)
                part = _cut(part, low_us, high_us)
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
    stored = np.array([row[0] for row in fetch_all(
        raw, f"SELECT id FROM inference_logs WHERE model = {mark} AND ts >= {mark} "
        f"AND ts < {mark}", [model, low, high])], dtype=np.int64)
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


