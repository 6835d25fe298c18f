"""The compactor: copies new logs and labels into log blocks (``monitor.store.blocks``).

``compact`` (``mqm compact``, and a job of ``mqm serve`` that runs often and before
each check) writes blocks for the rows no block covers yet, filling the newest block
up to ``BLOCK_ROWS`` before it starts another, and brings the blocks' labels up to
date.

Row ids are assigned in commit order on SQLite (one writer at a time). On PostgreSQL a
transaction can commit after a later one, so the compactor first takes a SHARE lock on
both tables for a moment: it waits for writes in flight, and every id below the
largest one it then reads is committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.errors import DatabaseError, first_line
from monitor.store.blocks import (
    _EPOCH,
    _TOP,
    BLOCK_ROWS,
    FORMAT,
    Part,
    _Block,
    _blocks,
    _micros,
    _uncovered,
    concat_parts,
    decode_ids,
    decode_labels,
    decode_part,
    encode_labels,
    encode_part,
    fetch_all,
    part_of,
)
from monitor.store.columnar import decode_objects, encode
from monitor.store.db import driver_connection
from monitor.store.frames import WindowBuilder, loads_each
from monitor.store.locks import Fence, bound_transaction, check_fence
from monitor.store.reading import _window_sql, driver_errors, fetch_into, sql_marks
from monitor.store.tables import log_blocks

if TYPE_CHECKING:
    pass

__all__ = ["BLOCK_ROWS", "LABEL_BATCH", "CompactResult", "compact", "compact_or_fail",
           "model_in_id_range"]

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
        raw = driver_connection(conn)
        if dialect != "sqlite":
            raw.execute("SET LOCAL jit = off")
        fetch_into(raw, dialect == "sqlite", _window_sql(dialect, False, False, by_id=True),
                   [model, lo, hi, limit], builder)
    return builder


def _read(engine: Engine, model: str, lo: int, hi: int, limit: int) -> Part | None:
    """The model's first ``limit`` rows with lo < id <= hi, read from the table."""
    builder = _read_rows(engine, model, lo, hi, limit)
    return part_of(builder) if builder.rows else None


MAX_RUNS = 64  # runs of the load's rows and of others' in turn: past that, read it all back


class _Rows:
    """The model's rows by id: those of a load (``known``: parts in id order, their rows
    in id order, without labels) from memory, the others (stored before, after, or by
    another writer between the load's rows) from the table.

    ``segments``: id ranges (a, b] in order, each read from memory (it holds no row of
    the model but the load's) or from the table (it holds none of the load's rows).
    Reads go up in id order; a part is let go once read.
    """

    def __init__(self, engine: Engine, model: str, known: list[Part]) -> None:
        self.engine = engine
        self.model = model
        lo, hi = int(known[0].ids[0]), int(known[-1].ids[-1])
        stored = _model_ids(engine, model, lo, hi, sum(map(len, known)))
        if stored is None:  # exactly the load's rows in [lo, hi]
            self.segments = [(0, lo - 1, False), (lo - 1, hi, True), (hi, _TOP, False)]
        else:
            # Rows of the load deleted since (retention, by hand) go in no block.
            known = [p.take(np.flatnonzero(np.isin(p.ids, stored))) for p in known]
            known = [p for p in known if len(p)]
            self.segments = [(0, _TOP, False)]
            if known:
                ours = np.isin(stored, np.concatenate([p.ids for p in known]))
                segments = _segments(stored, ours)
                if len(segments) - 2 <= MAX_RUNS:
                    self.segments = segments
                else:  # another writer's rows all through the load: read it all back
                    known = []
        self.parts = _with_labels(engine, model, known)

    def read(self, lo: int, hi: int, limit: int) -> Part | None:
        """The model's first ``limit`` rows with lo < id <= hi, in id order."""
        parts: list[Part] = []
        count = 0
        for a, b, memory in self.segments:
            a, b = max(a, lo), min(b, hi)
            if a >= b:
                continue
            got = (self._known(a, b, limit - count) if memory
                   else [p for p in [_read(self.engine, self.model, a, b, limit - count)]
                         if p is not None])
            parts += got
            count += sum(map(len, got))
            if count >= limit:
                break
        return concat_parts(parts) if parts else None

    def _known(self, lo: int, hi: int, limit: int) -> list[Part]:
        """The load's first ``limit`` rows with lo < id <= hi; the parts before ``lo``
        are let go (no read goes below it again)."""
        while self.parts and self.parts[0].ids[-1] <= lo:
            self.parts.pop(0)
        out = []
        for part in self.parts:
            if limit <= 0 or part.ids[0] > hi:
                break
            first = int(np.searchsorted(part.ids, lo, side="right"))
            last = min(int(np.searchsorted(part.ids, hi, side="right")), first + limit)
            if last > first:
                out.append(part if (first, last) == (0, len(part))
                           else part.take(np.arange(first, last)))
                limit -= last - first
        return out


def _segments(stored: np.ndarray, ours: np.ndarray) -> list[tuple[int, int, bool]]:
    """``_Rows.segments`` for the model's ids ``stored`` in the load's id range, ``ours``
    telling the load's."""
    out = [(0, int(stored[0]) - 1, False)]
    at = int(stored[0]) - 1
    # Where a run of the load's rows or of others' ends: the last id of each run.
    ends = np.flatnonzero(np.diff(ours.astype(np.int8))) if len(ours) > 1 else np.array([], int)
    for end in [*ends.tolist(), len(stored) - 1]:
        out.append((at, int(stored[end]), bool(ours[end])))
        at = int(stored[end])
    out.append((at, _TOP, False))
    return out


def model_in_id_range(dialect: str, table: str = "") -> str:
    """``model = ? AND lo <= id <= hi`` (parameters: model, lo, hi) for a range of ids in
    ``inference_logs`` (``table``: its alias and a dot). On SQLite the unary + keeps the
    planner on the id range: by the model's index it would walk every row the model
    ever stored."""
    mark, _ = sql_marks(dialect)
    plus = "+" if dialect == "sqlite" else ""
    return (f"{plus}{table}model = {mark} AND {table}id >= {mark} "
            f"AND {table}id <= {mark}")


def _model_ids(engine: Engine, model: str, lo: int, hi: int, n: int) -> np.ndarray | None:
    """The ids of the model's rows with lo <= id <= hi, in order; None when the load's
    ``n`` ids are every id from lo to hi: ids are unique, so no other row has one.

    (A row of the load deleted since is then not noticed, as the compactor does not
    notice one deleted between its read and its write: the window read that counts
    the rows drops the block.)"""
    if hi - lo + 1 == n:
        return None
    with engine.connect() as conn, driver_errors(engine, "reading inference logs"):
        rows = fetch_all(driver_connection(conn), "SELECT id FROM inference_logs WHERE "
                         f"{model_in_id_range(engine.dialect.name)} ORDER BY id",
                         [model, lo, hi])
    return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))


def _with_labels(engine: Engine, model: str, known: list[Part]) -> list[Part]:
    """``known`` with the labels stored for its rows (as the row reader joins them)."""
    if not known:
        return known
    dialect = engine.dialect.name
    _, text = sql_marks(dialect)
    with engine.connect() as conn, driver_errors(engine, "reading labels"):
        found = fetch_all(
            driver_connection(conn),
            f"SELECT l.id, COALESCE(g.label{text}, 'null'), g.ts FROM inference_logs AS l "
            "JOIN ground_truth AS g ON g.model = l.model AND g.request_id = l.request_id "
            f"WHERE {model_in_id_range(dialect, 'l.')} ORDER BY l.id",
            [model, int(known[0].ids[0]), int(known[-1].ids[-1])])
    if not found:
        return known
    found_ids = np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))
    out = []
    for part in known:
        # The range may hold another writer's rows too: only the load's take labels.
        here = np.flatnonzero((found_ids >= part.ids[0]) & (found_ids <= part.ids[-1]))
        positions = np.searchsorted(part.ids, found_ids[here])
        mine = part.ids[np.minimum(positions, len(part) - 1)] == found_ids[here]
        if not mine.any():
            out.append(part)
            continue
        rows = [found[k] for k in here[mine]]
        at = positions[mine]
        values = np.full(len(part), None, dtype=object)
        values[at] = np.fromiter(loads_each([row[1] for row in rows]), dtype=object,
                                 count=len(rows))
        label_time = part.label_time.copy()
        label_time[at] = _micros([row[2] for row in rows])
        out.append(Part(part.ids, part.ts, part.meta, part.features, part.probabilities,
                        encode(values.tolist()), label_time, part.feature_keys,
                        part.proba_keys))
    return out


def _times_of(part: Part) -> tuple[datetime, datetime]:
    low, high = int(part.ts.min()), int(part.ts.max())
    return _EPOCH + timedelta(microseconds=low), _EPOCH + timedelta(microseconds=high)


def compact(engine: Engine, model: str, *, block_rows: int | None = None,
            now: datetime | None = None, fence: Fence | None = None,
            known: list[Part] | None = None) -> CompactResult:
    """Write blocks for the model's rows that no block covers, and bring the blocks'
    labels up to date. Safe to run while others write rows or compact: a block that
    another compactor wrote first makes this one stop (it finds the rows covered next
    time).

    ``fence``: each block write checks, in its own transaction, that this replica still
    holds the model's lease, and raises ``LeaseLost`` (nothing of that write kept) when
    it does not: a stalled leader that wakes up does no more work on the model.

    ``known``: rows of the model just stored, as the row reader would read them
    (``monitor.store.arrow_blocks``): parts in id order, each in id order, without
    labels. They are taken from memory instead of read back (and let go as they go
    into blocks); their labels, and every other row, come from the tables.
    """
    t0 = time.perf_counter()
    block_rows = block_rows or BLOCK_ROWS
    result = CompactResult(model)
    top, labels_hw = _high_marks(engine)
    with engine.connect() as conn:
        blocks = _blocks(driver_connection(conn), sql_marks(engine.dialect.name)[0],
                         model)
    # After the high marks: the labels read with the known rows are at least labels_hw's.
    rows = _Rows(engine, model, known) if known else None

    def pieces() -> Iterator[_Piece]:
        for lo, hi in _uncovered(blocks, top):
            last = blocks[-1] if blocks and blocks[-1].hi == lo else None
            while lo < hi:
                grow = last if last is not None and last.rows < block_rows else None
                room = block_rows - grow.rows if grow is not None else block_rows
                new = (rows.read(lo, hi, room) if rows is not None
                       else _read(engine, model, lo, hi, room))
                if new is None:
                    break
                end = hi if len(new) < room else int(new.ids[-1])
                yield _Piece(new, lo, end, grow)
                last = None
                lo = end

    # Each next block is read and encoded on a second thread while this one stores the
    # last (the encoding, 0.08 s per 200,000 rows, lets go of the GIL, as the database's
    # write does). A block that grows a stored one is encoded with it, in its transaction.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqm-compact") as pool:
        upcoming = pieces()
        ahead = pool.submit(_next_piece, upcoming)
        while (piece := ahead.result()) is not None:
            ahead = pool.submit(_next_piece, upcoming)
            if not _store(engine, model, piece, labels_hw, now, fence):
                return result  # another compactor got there first
            result.rows += len(piece.rows)
            result.blocks += 1
    result.labels = _refresh_labels(engine, model, labels_hw, now, fence)
    result.seconds = time.perf_counter() - t0
    return result


@dataclass
class _Piece:
    """The rows of one block to store (ids lo < id <= hi), or to append to ``grow``;
    ``encoded``: their block bytes, made ahead (not for a block that grows)."""

    rows: Part
    lo: int
    hi: int
    grow: _Block | None
    encoded: tuple[bytes, bytes] | None = None


def _next_piece(pieces: Iterator[_Piece]) -> _Piece | None:
    piece = next(pieces, None)
    if piece is not None and piece.grow is None:
        piece.encoded = encode_part(piece.rows)
    return piece


def _store(engine: Engine, model: str, piece: _Piece, labels_hw: int,
           now: datetime | None, fence: Fence | None) -> bool:
    """Insert a block for the piece's rows, or append them to the block it grows."""
    t = log_blocks
    stamp = now or datetime.now(UTC)
    try:
        return _write(engine, t, model, piece, labels_hw, stamp, fence)
    except sa.exc.IntegrityError:  # another compactor wrote this block first
        return False


class _Lost(Exception):
    """Another compactor covered some of the rows first: roll back."""


def _fenced(conn: sa.Connection, fence: Fence | None) -> None:
    if fence is not None:
        bound_transaction(conn, fence)
        check_fence(conn, fence)


def _write(engine: Engine, t: sa.Table, model: str, piece: _Piece, labels_hw: int,
           stamp: datetime, fence: Fence | None) -> bool:
    new, lo, hi, grow = piece.rows, piece.lo, piece.hi, piece.grow
    try:
        with engine.begin() as conn:
            _fenced(conn, fence)
            if conn.dialect.name == "postgresql":  # a model's block writes one at a time
                from monitor.store.locks import advisory_key

                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": advisory_key(f"mqm-log-blocks:{model}")})
            if grow is not None:
                data, labels = conn.execute(sa.select(t.c.data, t.c.labels).where(
                    t.c.id == grow.id)).one()
                new = concat_parts([decode_part(data, labels), new])
                labels_hw = min(labels_hw, grow.labels_hw)
            # Encoded ahead unless it grows a block (``_next_piece``).
            rows, label_blob = piece.encoded if piece.encoded is not None \
                else encode_part(new)
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
                key = conn.execute(sa.insert(t).values(
                    model=model, lo_id=lo, created_at=stamp, **values)).inserted_primary_key
                assert key is not None
                own = key[0]
            # Checked after the write, which holds SQLite's write lock: no compactor can
            # slip a block in between.
            if conn.execute(sa.select(sa.func.count()).select_from(t).where(
                    t.c.model == model, t.c.lo_id < hi, t.c.hi_id > lo,
                    t.c.id != own)).scalar_one():
                raise _Lost
            if fence is not None:  # again last: the shortest time between check and commit
                check_fence(conn, fence)
    except _Lost:
        return False
    return True


LABEL_BATCH = 200_000  # labels taken into blocks per transaction: bounds memory


def _refresh_labels(engine: Engine, model: str, labels_hw: int, now: datetime | None,
                    fence: Fence | None = None) -> int:
    """Labels stored since each block's ``labels_hw`` written into it, in batches of
    ``LABEL_BATCH`` labels (a bulk load of labels stays bounded in memory); returns the
    number of block updates."""
    touched = 0
    while True:
        done, changed = _refresh_batch(engine, model, labels_hw, now, fence)
        touched += changed
        if done:
            return touched


def _refresh_batch(engine: Engine, model: str, labels_hw: int, now: datetime | None,
                   fence: Fence | None) -> tuple[bool, int]:
    t = log_blocks
    mark, text = sql_marks(engine.dialect.name)
    with engine.begin() as conn:
        _fenced(conn, fence)
        raw = driver_connection(conn)
        blocks = _blocks(raw, mark, model)
        after = min((b.labels_hw for b in blocks), default=labels_hw)
        if after >= labels_hw:
            return True, 0
        # From ground_truth's id range (CROSS JOIN fixes the order on SQLite), the oldest
        # first, so that a batch ends at a label id every block can move to.
        late = fetch_all(
            raw, f"SELECT g.id, l.id, COALESCE(g.label{text}, 'null'), g.ts "
            "FROM ground_truth AS g CROSS JOIN inference_logs AS l "
            f"WHERE l.model = g.model AND l.request_id = g.request_id AND g.model = {mark}"
            f" AND g.id > {mark} AND g.id <= {mark} ORDER BY g.id LIMIT {mark}",
            [model, after, labels_hw, LABEL_BATCH])
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
            # Only the ids and the labels: the other columns stay as they are.
            positions = np.searchsorted(decode_ids(data), [r[0] for r in rows])
            coded, label_time = decode_labels(labels)
            values = decode_objects(coded)
            values[positions] = np.fromiter(loads_each([r[1] for r in rows]), dtype=object,
                                            count=len(rows))
            label_time = label_time.copy()
            label_time[positions] = _micros([r[2] for r in rows])
            conn.execute(sa.update(t).where(t.c.id == block.id).values(
                labels=encode_labels(encode(values.tolist()), label_time), labels_hw=upto,
                updated_at=stamp))
        conn.execute(sa.update(t).where(t.c.model == model, t.c.labels_hw < upto)
                     .values(labels_hw=upto))
        if fence is not None:
            check_fence(conn, fence)
    return upto >= labels_hw, len(by_block)


def compact_or_fail(engine: Engine, model: str, fence: Fence | None = None) -> CompactResult:
    """``compact``, its database errors turned into one ``DatabaseError`` naming the model."""
    try:
        return compact(engine, model, fence=fence)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        raise DatabaseError(f"cannot compact the logs of {model}: {first_line(exc)}") from None
