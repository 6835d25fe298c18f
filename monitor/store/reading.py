"""Fast reading of log windows: raw driver cursors, JSON parsed with orjson, columns built
batch by batch.

Frames come out as ``pd.DataFrame.from_records(list_of_dicts)`` would build them (a column
whose values are all numbers is numeric; a mixed one is an object column holding the raw
values; a key absent from a row is NaN), without ever holding the window's rows or dicts
all at once. bench/read_window.py measures it against the SQLAlchemy path it replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.store.db import driver_connection
from monitor.store.frames import (
    FETCH_ROWS,
    META_COLUMNS,
    WindowBuilder,
    WindowFrames,
    gc_paused,
    loads_each,
    shared,
)

__all__ = [
    "META_COLUMNS",
    "driver_errors",
    "fetch_into",
    "id_ranges_sql",
    "read_builtin",
    "sql_marks",
]



@contextmanager
def driver_errors(engine: Engine, what: str) -> Iterator[None]:
    """Raw driver errors re-raised as SQLAlchemy's, which the sources turn into ours."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(what, None, exc, dbapi.Error) from exc


def _bound(value: datetime, sqlite: bool) -> Any:
    """A time as the column stores it: naive UTC (text on SQLite, like logs.py writes)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds") if sqlite else value


def sql_marks(dialect: str) -> tuple[str, str]:
    """The driver's parameter mark, and the cast that gives JSON as text, on mqm's own
    tables' two backends."""
    if dialect == "sqlite":
        return "?", ""
    if dialect == "postgresql":
        return "%s", "::text"
    raise NotImplementedError(f"mqm's own tables need SQLite or PostgreSQL, not {dialect}")


def id_ranges_sql(mark: str, ranges: int, column: str = "id") -> str:
    """`` AND (...)``: ``column`` in one of ``ranges`` ranges ``lo < id <= hi``, whose
    bounds are parameters; empty for no range."""
    if not ranges:
        return ""
    return " AND (" + " OR ".join(
        [f"({column} > {mark} AND {column} <= {mark})"] * ranges) + ")"


def _window_sql(dialect: str, keyset: bool, limit: bool, *, by_id: bool = False,
                id_ranges: int = 0, by_rowid: bool = False) -> str:
    """The rows of a window in (ts, id) order; ``by_id``: of an id range in id order.

    ``id_ranges``: only rows in that many ranges ``lo < id <= hi`` (their bounds are
    parameters after the window's). ``by_rowid`` (SQLite): search those ranges by id
    rather than the window by time, for ranges that hold fewer rows than the window (the
    rows log blocks do not cover yet: SQLite would otherwise pick the time index and
    visit every row of the window, 0.1-0.2 s per million).
    """
    mark, text = sql_marks(dialect)
    # JSON comes as text (parsed here, not per value by SQLAlchemy); COALESCE spares
    # the parser SQL NULLs. The label joins through ground_truth's unique key.
    sql = (
        f"SELECT l.id, l.ts, l.request_id, l.model_version, "
        f"COALESCE(l.prediction{text}, 'null'), l.latency_ms, l.error, l.error_message, "
        f"g.ts, l.features{text}, COALESCE(l.probabilities{text}, 'null'), "
        f"COALESCE(g.label{text}, 'null'), l.fallback_reason "
        f"FROM inference_logs AS l{' NOT INDEXED' if by_rowid else ''} "
        "LEFT JOIN ground_truth AS g "
        "ON g.model = l.model AND g.request_id = l.request_id "
    )
    if by_id:
        return sql + f"WHERE l.model = {mark} AND l.id > {mark} AND l.id <= {mark} " \
            f"ORDER BY l.id LIMIT {mark}"
    sql += f"WHERE l.model = {mark} AND l.ts >= {mark} AND l.ts < {mark}"
    sql += id_ranges_sql(mark, id_ranges, "l.id")
    if keyset:  # rows after the last one read, in (ts, id) order; ts >= it is in the range
        sql += f" AND (l.ts > {mark} OR l.id > {mark})"
    sql += " ORDER BY l.ts, l.id"
    if limit:
        sql += f" LIMIT {mark}"
    return sql


Position = tuple[Any, int]  # (ts as stored, id) of the last row read


def read_builtin(
    engine: Engine, model: str, start: datetime, end: datetime, *,
    after: Position | None = None, limit: int | None = None,
) -> tuple[WindowFrames, Position | None]:
    """Rows of ``model`` with start <= ts < end (after ``after``, at most ``limit``).

    Returns the frames and the position of the last row, for the next chunk.
    """
    dialect = engine.dialect.name
    sqlite = dialect == "sqlite"
    low = after[0] if after is not None else _bound(start, sqlite)
    params: list[Any] = [model, low, _bound(end, sqlite)]
    if after is not None:
        params += [after[0], after[1]]
    if limit is not None:
        params.append(limit)
    sql = _window_sql(dialect, after is not None, limit is not None)
    builder = WindowBuilder()
    with engine.connect() as conn, driver_errors(engine, "reading inference logs"):
        raw = driver_connection(conn)
        if not sqlite:  # JIT-compiling this scan and join costs more than it saves
            raw.execute("SET LOCAL jit = off")
        last = fetch_into(raw, sqlite, sql, params, builder)
        with gc_paused():
            frames = builder.build()
    return frames, last


def fetch_into(raw: Any, sqlite: bool, sql: str, params: Sequence[Any],
               builder: WindowBuilder) -> Position | None:
    """Rows of a ``_window_sql`` query added to ``builder`` on the driver connection
    ``raw``; returns the position of the last row."""
    last: Position | None = None
    # A server-side cursor on PostgreSQL: the client holds one batch, not the result.
    cur = raw.cursor() if sqlite else raw.cursor(name="mqm_log_window")
    try:
        cur.execute(sql, params)
        batches = _prefetched(lambda: cur.fetchmany(FETCH_ROWS), not sqlite)
        with gc_paused(), closing(batches):  # closed before the cursor, on any error
            for rows in batches:
                last = (rows[-1][1], rows[-1][0])
                _add_rows(builder, rows, sqlite)
                del rows
    finally:
        cur.close()
    return last


def _prefetched(fetch: Callable[[], list[Any]], threaded: bool
                ) -> Generator[list[Any], None, None]:
    """Batches from ``fetch`` until an empty one; ``threaded``, each next one is fetched
    by a thread while the caller works on the last.

    psycopg waits for the server without the GIL, so PostgreSQL works on the next batch
    meanwhile (1M rows: 15-21 s against 23 s). sqlite3 takes the GIL back for every
    row: no gain there. Leaving waits for the pending fetch (the cursor is shared).
    """
    if not threaded:
        while rows := fetch():
            yield rows
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqm-fetch") as pool:
        pending = pool.submit(fetch)
        while rows := pending.result():
            pending = pool.submit(fetch)
            yield rows


def _add_rows(builder: WindowBuilder, rows: list[tuple[Any, ...]], sqlite: bool) -> None:
    (ids, ts, rid, version, pred, latency, error, message, label_ts, feats, probs,
     labels, reasons) = zip(*rows, strict=True)
    builder.ids.extend(ids)
    builder.fallback.extend(shared(reasons, builder._seen["fallback"]))
    meta = {
        "request_id": rid, "ts": ts, "model_version": version, "prediction": loads_each(pred),
        "latency_ms": latency, "error": tuple(map(bool, error)) if sqlite else error,
        "error_message": message, "label_time": label_ts,
    }
    builder.add(meta, loads_each(feats, checked=False), loads_each(probs, checked=False),
                loads_each(labels), feature_texts=feats, probability_texts=probs)
