"""Log sources: where a model's inference logs are read from, one time window at a time."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.errors import ConfigError, DatabaseError
from monitor.store.db import driver_connection, safe_url
from monitor.store.frames import WindowBuilder, WindowFrames, gc_paused, loads_each
from monitor.store.reading import META_COLUMNS, driver_errors, read_builtin
from monitor.store.tables import inference_logs
from monitor.times import aware

if TYPE_CHECKING:
    import pandas as pd

    from monitor.config import SourceConfig
    from monitor.schema import ModelSchema
    from monitor.text_codes import TextCodes

__all__ = [
    "META_COLUMNS",
    "BuiltinSource",
    "LogSource",
    "LogWindow",
    "SqlSource",
    "dispose_source_engines",
    "make_source",
    "source_engine",
]


@dataclass(frozen=True)
class LogWindow:
    """The logs of one window: per-row fields, the features exactly as received, labels.

    ``features`` has one column per feature name seen in the window; a value that
    did not fit the column's type keeps its own Python type (object column). ``meta``
    has META_COLUMNS, times timezone-aware UTC (``label_time`` NaT where no label has
    arrived). ``labels`` is an object Series of each row's label JSON value, None where
    no label has arrived. All frames share one index, 0..rows-1.
    """

    start: datetime
    end: datetime
    meta: pd.DataFrame
    features: pd.DataFrame
    probabilities: pd.DataFrame
    labels: pd.Series
    # mqm's own table only: why the serving guard answered with its default (None: the
    # model answered), per row; None for other sources, which do not record it.
    fallback_reasons: pd.Series | None = None
    # Features whose rows are all texts or nulls, as codes into their distinct texts
    # (``TextCodes``), when the read has them (from log blocks); checks judge each
    # distinct text once with them.
    texts: Mapping[str, TextCodes] | None = None
    # Each row's label and prediction as ``label_text`` gives them, and its model version,
    # as codes into their distinct texts (-1: none), when the read has them (from log
    # blocks); else None.
    label_codes: TextCodes | None = None
    prediction_codes: TextCodes | None = None
    version_codes: TextCodes | None = None

    @property
    def rows(self) -> int:
        return len(self.meta)


class LogSource(Protocol):
    """Reads one model's logs. Raises ``DatabaseError`` when the source cannot be read."""

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        """Rows with ``start <= time < end``."""
        ...

    def count(self, start: datetime, end: datetime) -> int:
        """Number of rows with ``start <= time < end``."""
        ...

    def iter_chunks(self, start: datetime, end: datetime, chunk_rows: int) -> Iterator[LogWindow]:
        """The rows of ``read_window`` in windows of at most ``chunk_rows`` rows.

        Rows are in (ts, id) order within a chunk, and across chunks too except where
        they come from log blocks (which follow the blocks). Each chunk has the window's
        start and end; an empty window yields nothing. Memory is bounded by the chunk
        (or the log block), not the window.
        """
        ...

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        """Earliest and latest inference time, or (None, None) when there are no logs."""
        ...


def _window(start: datetime, end: datetime, frames: WindowFrames) -> LogWindow:
    return LogWindow(start=start, end=end, meta=frames.meta, features=frames.features,
                     probabilities=frames.probabilities, labels=frames.labels,
                     fallback_reasons=frames.fallback_reasons, texts=frames.texts,
                     label_codes=frames.label_codes,
                     prediction_codes=frames.prediction_codes,
                     version_codes=frames.version_codes)


@contextmanager
def _reading(engine: Engine, what: str) -> Iterator[None]:
    """Driver errors as one-line ``DatabaseError``s."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot read {what} at {safe_url(str(engine.url))}: {reason}") from None


def _check_chunk_rows(chunk_rows: int) -> None:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")


class BuiltinSource:
    """mqm's own ``inference_logs`` table, labels joined from ``ground_truth``."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine = engine
        self.model = model

    def read_window(self, start: datetime, end: datetime, *, skip: Collection[str] = ()
                    ) -> LogWindow:
        """``skip``: meta columns the caller does not read; a read from log blocks leaves
        them out of ``meta`` (the rows' read keeps them)."""
        from monitor.store import block_reader

        with _reading(self.engine, "inference logs"):
            frames = block_reader.read_window(self.engine, self.model, start, end, skip)
            if frames is None:  # no block meets the window yet: the rows themselves
                frames, _ = read_builtin(self.engine, self.model, start, end)
        return _window(start, end, frames)

    def read_window_within(self, start: datetime, end: datetime, limit: int, *,
                           skip: Collection[str] = ()) -> tuple[int, LogWindow | None]:
        """The window's row count, and the window (``read_window``) when it has at most
        ``limit`` rows, else None. Read from log blocks, the count is the read's own, of
        its snapshot (a count of its own was a second pass over the window's index,
        0.05-0.1 s per million rows); from the rows, ``count``, then the read."""
        from monitor.store import block_reader

        with _reading(self.engine, "inference logs"):
            frames = block_reader.read_window(self.engine, self.model, start, end, skip,
                                              at_most=limit)
        if isinstance(frames, block_reader.TooMany):
            return frames.rows, None
        if frames is not None:
            return len(frames.meta), _window(start, end, frames)
        rows = self.count(start, end)
        if rows > limit:
            return rows, None
        with _reading(self.engine, "inference logs"):
            frames, _ = read_builtin(self.engine, self.model, start, end)
        return rows, _window(start, end, frames)

    def count(self, start: datetime, end: datetime) -> int:
        t = inference_logs
        query = sa.select(sa.func.count()).select_from(t).where(
            t.c.model == self.model, t.c.ts >= start, t.c.ts < end)
        with _reading(self.engine, "inference logs"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def iter_chunks(self, start: datetime, end: datetime, chunk_rows: int) -> Iterator[LogWindow]:
        from monitor.store import block_reader

        _check_chunk_rows(chunk_rows)
        with _reading(self.engine, "inference logs"):
            chunks = block_reader.window_chunks(self.engine, self.model, start, end, chunk_rows)
        if chunks is not None:  # log blocks, one at a time, then the rows they do not cover
            with _reading(self.engine, "inference logs"), closing(chunks):
                for frames in chunks:
                    yield _window(start, end, frames)
            return
        # Keyset pagination on (ts, id): each chunk is one short query on the (model, ts)
        # index, so no connection or transaction stays open between chunks.
        after = None
        while True:
            with _reading(self.engine, "inference logs"):
                frames, after = read_builtin(self.engine, self.model, start, end,
                                             after=after, limit=chunk_rows)
            if len(frames.meta):
                yield _window(start, end, frames)
            if len(frames.meta) < chunk_rows:
                return

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        t = inference_logs
        query = sa.select(sa.func.min(t.c.ts), sa.func.max(t.c.ts)).where(t.c.model == self.model)
        with _reading(self.engine, "inference logs"), self.engine.connect() as conn:
            low, high = conn.execute(query).one()
        # min()/max() bypass the column type on SQLite: coerce back to aware UTC.
        return aware(low), aware(high)



_LABEL_BATCH = 500  # ids per query: under SQLite's oldest limit of 999 parameters


def read_labels(
    engine: Engine, model: str, request_ids: list[str | None]
) -> tuple[list[Any], list[Any]]:
    """Label and label time (None where none) of each request id, from ground_truth."""
    wanted = list(dict.fromkeys(r for r in request_ids if r is not None))
    found: dict[str, tuple[Any, Any]] = {}
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn, driver_errors(engine, "reading labels"):
        cur = driver_connection(conn).cursor()
        try:
            for i in range(0, len(wanted), _LABEL_BATCH):
                ids = wanted[i:i + _LABEL_BATCH]
                if sqlite:
                    cur.execute("SELECT request_id, label, ts FROM ground_truth WHERE model = ?"
                                f" AND request_id IN ({', '.join('?' * len(ids))})",
                                [model, *ids])
                else:
                    cur.execute("SELECT request_id, label::text, ts FROM ground_truth "
                                "WHERE model = %s AND request_id = ANY(%s)", [model, ids])
                found.update((rid, (label, ts)) for rid, label, ts in cur.fetchall())
        finally:
            cur.close()
    parsed = dict(zip(found, loads_each([label for label, _ in found.values()]), strict=True))
    return ([parsed.get(r) if r is not None else None for r in request_ids],
            [found[r][1] if r in found else None for r in request_ids])


def _request_id(value: Any) -> str | None:
    """A user's request id as ground_truth stores it (see ``request_id_of``)."""
    from monitor.store.logs import RowProblem, request_id_of

    try:
        return request_id_of(value)
    except RowProblem:
        return None


class SqlSource:
    """A user's own table or query, mapped to mqm's fields through ``columns``.

    Times are compared as timestamps; on SQLite a text time column must hold ISO 8601
    text (it is normalised with ``datetime()`` before comparing). SQLite has no
    boolean type and returns 0/1, so for features declared bool exactly 0 and 1 are
    read as false and true; any other value is kept and reported by the schema check.
    Labels come from mqm's own ``ground_truth`` table on ``store_engine`` (default: the
    source's engine), matched by model and request id. Rows come in the database's
    order (there is no ORDER BY: a user's table may have no index to sort with).
    """

    def __init__(
        self,
        engine: Engine,
        config: SourceConfig,
        schema: ModelSchema,
        *,
        model: str | None = None,
        store_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.schema = schema
        self.model = model if model is not None else schema.model
        self.store_engine = store_engine if store_engine is not None else engine
        if config.table is not None:
            self._from: Any = sa.table(config.table)
            if "." in config.table:
                schema_name, name = config.table.rsplit(".", 1)
                self._from = sa.table(name, schema=schema_name)
        else:
            self._from = sa.text(str(config.query)).columns().subquery("src")
        m = config.columns
        # A features-only model (task: features) reads no prediction or probabilities,
        # even if mapped (``mqm config check`` warns of such a mapping).
        prediction = None if schema.features_only else m.prediction or schema.prediction_column
        self._meta_cols = [m.request_id, m.timestamp, m.model_version, prediction,
                           m.latency_ms, m.error, m.error_message]
        if m.features_json:
            self._feature_cols = {"__features_json": m.features_json}
        else:
            self._feature_cols = {f: m.features.get(f, f) for f in schema.feature_names}
        self._proba_cols = ({} if schema.prediction is None else m.probabilities
                            if m.probabilities is not None
                            else schema.prediction.probability_columns)
        self._selected = list(dict.fromkeys(
            [c for c in self._meta_cols if c] + list(self._feature_cols.values())
            + list(self._proba_cols.values())))

    def _col(self, name: str) -> sa.ColumnClause[Any]:
        return sa.column(name)

    def _time(self) -> Any:
        col = self._col(self.config.columns.timestamp)
        if self.engine.dialect.name == "sqlite":
            return sa.func.datetime(col)
        return col

    def _bound(self, value: datetime) -> Any:
        if self.engine.dialect.name == "sqlite":
            return sa.func.datetime(value.strftime("%Y-%m-%d %H:%M:%S"))
        return value

    def _in_window(self, start: datetime, end: datetime) -> Any:
        return sa.and_(self._time() >= self._bound(start), self._time() < self._bound(end))

    def _query(self, start: datetime, end: datetime) -> Any:
        return (
            sa.select(*[self._col(c) for c in self._selected])
            .select_from(self._from)
            .where(self._in_window(start, end))
        )

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        with _reading(self.engine, "the log source"), self.engine.connect() as conn:
            result = conn.execute(self._query(start, end))
            names = list(result.keys())
            rows = result.all()
        return self._window(start, end, names, rows)

    def count(self, start: datetime, end: datetime) -> int:
        query = sa.select(sa.func.count()).select_from(self._from).where(
            self._in_window(start, end))
        with _reading(self.engine, "the log source"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def iter_chunks(self, start: datetime, end: datetime, chunk_rows: int) -> Iterator[LogWindow]:
        # One streamed query (a server-side cursor on PostgreSQL): a user's table may
        # have no key to paginate on. The connection is held until the iterator ends.
        _check_chunk_rows(chunk_rows)
        with _reading(self.engine, "the log source"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
                self._query(start, end))
            names = list(result.keys())
            for part in result.partitions(chunk_rows):
                yield self._window(start, end, names, part)

    def _window(self, start: datetime, end: datetime, names: list[str],
                rows: Any) -> LogWindow:
        import json

        m = self.config.columns
        missing = [c for c in self._selected if c not in names]
        if rows and missing:
            raise ConfigError(f"log source: columns not found: {', '.join(missing)}")
        at = {name: i for i, name in enumerate(names)}
        bool_features = [f.name for f in self.schema.features if f.type == "bool"]
        meta_rows = []
        features: list[dict[str, Any]] = []
        probabilities: list[dict[str, Any] | None] = []
        with gc_paused():
            for row in rows:
                meta_rows.append(tuple(row[at[c]] if c else None for c in self._meta_cols))
                if m.features_json:
                    raw = row[at[m.features_json]]
                    features.append(json.loads(raw) if isinstance(raw, str) else dict(raw or {}))
                else:
                    feats = {f: row[at[c]] for f, c in self._feature_cols.items()}
                    for name in bool_features:
                        value = feats.get(name)
                        if type(value) is int and value in (0, 1):
                            feats[name] = bool(value)
                    features.append(feats)
                probabilities.append({k: row[at[c]] for k, c in self._proba_cols.items()}
                                     or None)
            columns = list(zip(*meta_rows, strict=True)) or [()] * len(self._meta_cols)
            meta = dict(zip(META_COLUMNS, columns, strict=False))
            rids = [_request_id(r) for r in meta["request_id"]]
            with _reading(self.store_engine, "labels"):
                labels, label_times = read_labels(self.store_engine, self.model, rids)
            meta["label_time"] = label_times
            builder = WindowBuilder()
            builder.add(meta, features, probabilities, labels)
            window = _window(start, end, builder.build())
        if not window.meta.empty and m.error:
            window.meta["error"] = window.meta["error"].fillna(False).astype(bool)
        elif not window.meta.empty:
            window.meta["error"] = False
        return window

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        col = self._time()
        query = sa.select(sa.func.min(col), sa.func.max(col)).select_from(self._from)
        with _reading(self.engine, "the log source"), self.engine.connect() as conn:
            low, high = conn.execute(query).one()
        return aware(low), aware(high)


def make_source(
    engine: Engine,
    model: str,
    config: SourceConfig,
    schema: ModelSchema,
    *,
    store_engine: Engine | None = None,
) -> LogSource:
    """The configured source; a sql source with its own URL gets its own engine.

    ``engine`` is mqm's own database; labels of a sql source are read from
    ``store_engine`` (default: ``engine``).
    """
    if config.kind == "builtin":
        return BuiltinSource(engine, model)
    store = store_engine if store_engine is not None else engine
    if config.url:
        engine = source_engine(config.url)
    return SqlSource(engine, config, schema, model=model, store_engine=store)


_SOURCE_ENGINES: dict[str, Engine] = {}


def source_engine(url: str) -> Engine:
    """One engine per source URL for the whole process (its pool is reused by every run),
    disposed at exit."""
    engine = _SOURCE_ENGINES.get(url)
    if engine is None:
        import atexit

        from monitor.store.db import create_engine

        engine = _SOURCE_ENGINES.setdefault(url, create_engine(url))
        if len(_SOURCE_ENGINES) == 1:
            atexit.register(dispose_source_engines)
    return engine


def dispose_source_engines() -> None:
    """Close the pools of the sources' own databases."""
    while _SOURCE_ENGINES:
        _, engine = _SOURCE_ENGINES.popitem()
        engine.dispose()
