"""Fast reading of log windows: raw driver cursors, JSON parsed with orjson, columns built
batch by batch.

Frames come out as ``pd.DataFrame.from_records(list_of_dicts)`` would build them (a column
whose values are all numbers is numeric; a mixed one is an object column holding the raw
values; a key absent from a row is NaN), without ever holding the window's rows or dicts
all at once. bench/read_window.py measures it against the SQLAlchemy path it replaced.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import is_, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.errors import DatabaseError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["META_COLUMNS", "ColumnBuilder", "WindowBuilder", "WindowFrames", "driver_errors",
           "fetch_into", "gc_paused", "id_ranges_sql", "loads_each", "read_builtin", "sql_marks",
           "typed_column"]

META_COLUMNS = (
    "request_id", "ts", "model_version", "prediction", "latency_ms", "error", "error_message",
    "label_time",
)
FETCH_ROWS = 10_000  # rows per fetchmany: large enough to amortise calls, small in memory
_NAN = float("nan")  # what from_records puts where a row lacks a key


class WindowFrames(NamedTuple):
    meta: pd.DataFrame
    features: pd.DataFrame
    probabilities: pd.DataFrame
    labels: pd.Series
    # Why the serving guard answered with its default (None: the model answered); only
    # mqm's own table records it.
    fallback_reasons: pd.Series | None = None


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC paused: millions of new containers trigger collections that rescan
    the growing column lists each time (4x slower). Overlapping threads may end with one
    unpaused: slower, never wrong."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# orjson reads an integer literal beyond 64 bits as a float (>= 2**64 in size) where
# Python's json keeps an exact int. Parsed values are checked for such floats (cheap:
# they are typed anyway) and a batch that has one is read again by Python's json.
_HUGE = 2.0**64
_FLOAT = frozenset({float})
_SUSPECT = frozenset({float, list, dict})
_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float})
_STORED = frozenset({str, int, float, type(None)})  # what a JSON column gives back


def _huge(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return abs(value) >= _HUGE
    if kind is list:
        return any(map(_huge, value))
    if kind is dict:
        return any(map(_huge, value.values()))
    return False


def _has_huge(values: Sequence[Any], kinds: frozenset[type], nan_free: bool = True) -> bool:
    """Whether orjson may have read an integer beyond 64 bits among ``values``."""
    if not kinds & _SUSPECT:
        return False
    if kinds == _FLOAT and nan_free:  # the usual case; orjson itself never gives NaN
        return max(values) >= _HUGE or min(values) <= -_HUGE
    if kinds <= _SCALARS:  # test the floats in C (NaN tests false)
        floats = compress(values, map(is_, map(type, values), repeat(float)))
        return any(map(_HUGE.__le__, map(abs, floats)))
    return any(map(_huge, values))


def _load_one(text: str | bytes | float | None) -> Any:
    if text is None or isinstance(text, int | float):
        return text
    try:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:  # also read by Python's json: NaN, lone surrogates
            return json.loads(text)
        return json.loads(text) if _huge(value) else value
    except ValueError as exc:
        raise DatabaseError(f"a stored JSON value is not valid JSON ({exc})") from None


def _load_all(texts: Sequence[Any]) -> list[Any]:
    return list(map(_load_one, texts))


def loads_each(texts: Sequence[str | bytes | float | None], *, checked: bool = True
               ) -> list[Any]:
    """Each JSON text parsed as Python's json would (SQL NULL stays None), mostly by orjson.

    A number passes as it is: SQLite gives a JSON column NUMERIC affinity, so it
    stores the text of a bare JSON number as that number (SQLAlchemy reads it so too).
    ``checked=False`` leaves the huge-integer check to the caller (ColumnBuilder).
    """
    kinds = frozenset(map(type, texts))
    try:
        if kinds == {str}:
            values = list(map(orjson.loads, texts))
        elif kinds <= _NUMBERS:
            return list(texts)
        elif kinds <= _STORED:
            values = [orjson.loads(t) if type(t) is str else t for t in texts]
        else:
            return _load_all(texts)
    except orjson.JSONDecodeError:
        return _load_all(texts)
    if checked and _has_huge(values, frozenset(map(type, values))):
        return _load_all(texts)
    return values


Part = tuple[str, Sequence[Any], frozenset[type]]  # key, values of the batch, their types


class ColumnBuilder:
    """Rows of JSON objects turned into columns, one batch at a time.

    Columns are in order of first appearance, as from_records orders them. A batch
    whose rows all have the same keys (the usual case) is transposed in C; other
    batches row by row. Each column's value types are kept to type it at the end.
    """

    def __init__(self, key_orders: bool = False) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.kinds: dict[str, set[type]] = {}
        self.seen: dict[str, dict[Any, Any]] = {}
        self.rows = 0
        # With key_orders: each row's keys in their order, as an index into ``orders``
        # (log blocks need it to order columns as this builder does for any cut).
        self.orders: dict[tuple[str, ...], int] | None = {} if key_orders else None
        self.order_of_row: list[int] = []

    def add(self, objects: list[Any], texts: Sequence[Any] | None = None) -> None:
        """Add rows (a row that is not an object has no keys). With ``texts``, parsed by
        ``loads_each(texts, checked=False)``, a batch with a huge integer is read again."""
        n = len(objects)
        if not n:
            return
        if self.orders is not None:
            orders = self.orders
            self.order_of_row.extend(
                orders.setdefault(keys, len(orders))
                for keys in (tuple(o) if type(o) is dict else () for o in objects))
        parts, nan_free = self._transpose(objects)
        if texts is not None and any(_has_huge(v, kinds, nan_free) for _, v, kinds in parts):
            parts, _ = self._transpose(_load_all(texts))
        for key, values, kinds in parts:
            col = self.columns.get(key)
            if col is None:
                col = self.columns[key] = [_NAN] * self.rows
                self.kinds[key] = {float} if self.rows else set()
            if kinds <= _TEXTS:
                values = shared(values, self.seen.setdefault(key, {}), kinds)
            col.extend(values)
            self.kinds[key].update(kinds)
        self.rows += n
        for key, col in self.columns.items():
            if len(col) < self.rows:
                col.extend([_NAN] * (self.rows - len(col)))
                self.kinds[key].add(float)

    def _transpose(self, objects: list[Any]) -> tuple[list[Part], bool]:
        """Each key's values over the batch, and whether none is NaN for a missing key."""
        if set(map(type, objects)) != {dict}:
            objects = [o if isinstance(o, dict) else {} for o in objects]
        keys = tuple(objects[0])
        if set(map(len, objects)) == {len(keys)}:
            if not keys:
                return [], True
            try:  # same number of keys and all of the first row's: the same keys
                rows = list(map(itemgetter(*keys), objects))
            except KeyError:
                pass
            else:
                columns = zip(*rows, strict=True) if len(keys) > 1 else [rows]
                return [(k, v, frozenset(map(type, v)))
                        for k, v in zip(keys, columns, strict=True)], True
        batch: dict[str, list[Any]] = {}
        for i, obj in enumerate(objects):
            for key, value in obj.items():
                target = batch.get(key)
                if target is None:
                    target = batch[key] = [_NAN] * len(objects)
                target[i] = value
        return [(k, v, frozenset(map(type, v))) for k, v in batch.items()], False

    def frame(self) -> pd.DataFrame:
        """The frame, emptying the builder as it goes so that the lists are freed early."""
        import pandas as pd

        data = {}
        while self.columns:
            key = next(iter(self.columns))
            data[key] = typed_column(self.columns.pop(key), frozenset(self.kinds.pop(key)))
        # copy=False: the arrays are ours; consolidating them into blocks would copy all.
        return pd.DataFrame(data, index=pd.RangeIndex(self.rows), copy=False)


_TEXTS = frozenset({str, type(None)})
_MAX_SHARED = 10_000  # distinct texts per column worth sharing; past that, ids or free text


def shared(values: Sequence[Any], seen: dict[Any, Any],
           kinds: frozenset[type] | None = None) -> Iterable[Any]:
    """Equal texts as one object: a category repeated over 1M rows costs 8 MB, not 60.

    Only texts and None: as dict keys 1, 1.0 and True would merge.
    """
    if len(seen) > _MAX_SHARED or not (kinds or frozenset(map(type, values))) <= _TEXTS:
        return values
    return map(seen.setdefault, values, values)


_NUMPY = {frozenset({float}): "float64", frozenset({float, type(None)}): "float64",
          frozenset({int}): "int64", frozenset({bool}): "bool"}


def typed_column(values: list[Any], kinds: frozenset[type] | None = None) -> Any:
    """``values`` typed as from_records types them, skipping its scan where types tell:
    uniform numbers go to numpy, scalars with a text among them stay raw objects (unless
    pandas infers string dtypes); the rest gets pandas' own inference, as in from_records.
    """
    import numpy as np
    import pandas as pd

    if kinds is None:
        kinds = frozenset(map(type, values))
    kind = _NUMPY.get(kinds)
    if kind is not None:
        try:
            return np.array(values, dtype=kind)
        except OverflowError:  # beyond int64: pandas decides (uint64 or object)
            pass
    if str in kinds and kinds <= _SCALARS and not pd.get_option("future.infer_string"):
        return np.array(values, dtype=object)
    return values


def _times(values: list[Any]) -> pd.DatetimeIndex:
    """Aware UTC times; an index, which a frame takes as it is (a Series gets aligned).

    No cache: its duplicate search took a second on 1M mostly missing label times.
    """
    import pandas as pd

    if any(isinstance(v, str) for v in values):
        times = pd.to_datetime(values, utc=True, format="ISO8601", cache=False)
    else:
        times = pd.to_datetime(values, utc=True, cache=False)
    return pd.DatetimeIndex(times, dtype="datetime64[ns, UTC]")


class WindowBuilder:
    """A window's rows, added batch by batch, built into frames at the end."""

    def __init__(self, key_orders: bool = False) -> None:
        self.meta: dict[str, list[Any]] = {name: [] for name in META_COLUMNS}
        self.features = ColumnBuilder(key_orders)
        self.probabilities = ColumnBuilder(key_orders)
        self.labels: list[Any] = []
        self.ids: list[int] = []  # mqm's own table only: row ids and fallback reasons
        self.fallback: list[Any] = []
        self._seen: dict[str, dict[Any, Any]] = {"model_version": {}, "error_message": {},
                                                 "fallback": {}}

    @property
    def rows(self) -> int:
        return len(self.labels)

    def add(self, meta: dict[str, Sequence[Any]], features: list[Any],
            probabilities: list[Any], labels: list[Any], *,
            feature_texts: Sequence[Any] | None = None,
            probability_texts: Sequence[Any] | None = None) -> None:
        """One batch; ``meta`` maps META_COLUMNS to values; texts as in ColumnBuilder.add."""
        for name in META_COLUMNS:
            values = meta[name]
            seen = self._seen.get(name)
            self.meta[name].extend(values if seen is None else shared(values, seen))
        self.features.add(features, feature_texts)
        self.probabilities.add(probabilities, probability_texts)
        self.labels.extend(labels)

    def build(self) -> WindowFrames:
        import pandas as pd

        n = self.rows
        index = pd.RangeIndex(n)
        meta: dict[str, Any] = {}
        for name in META_COLUMNS:
            values = self.meta.pop(name)
            meta[name] = _times(values) if name in ("ts", "label_time") else typed_column(values)
        meta_frame = pd.DataFrame(meta, index=index, copy=False)
        features = self.features.frame()
        probabilities = self.probabilities.frame()
        labels = pd.Series(self.labels, index=index, dtype=object, name="label")
        reasons = (pd.Series(self.fallback, index=index, dtype=object, name="fallback_reason")
                   if len(self.fallback) == n else None)
        return WindowFrames(meta_frame, features, probabilities, labels, reasons)



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
                id_ranges: int = 0) -> str:
    """The rows of a window in (ts, id) order; ``by_id``: of an id range in id order.

    ``id_ranges``: only rows in that many ranges ``lo < id <= hi`` (their bounds are
    parameters after the window's).
    """
    mark, text = sql_marks(dialect)
    # JSON comes as text (parsed here, not per value by SQLAlchemy); COALESCE spares
    # the parser SQL NULLs. The label joins through ground_truth's unique key.
    sql = (
        f"SELECT l.id, l.ts, l.request_id, l.model_version, "
        f"COALESCE(l.prediction{text}, 'null'), l.latency_ms, l.error, l.error_message, "
        f"g.ts, l.features{text}, COALESCE(l.probabilities{text}, 'null'), "
        f"COALESCE(g.label{text}, 'null'), l.fallback_reason "
        "FROM inference_logs AS l LEFT JOIN ground_truth AS g "
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
        raw = conn.connection.driver_connection
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


def _prefetched(fetch: Callable[[], list[Any]], threaded: bool) -> Iterator[list[Any]]:
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
