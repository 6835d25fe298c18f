"""Log sources: where a model's inference logs are read from, one time window at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.errors import ConfigError, DatabaseError
from monitor.store.db import safe_url
from monitor.store.tables import inference_logs

if TYPE_CHECKING:
    import pandas as pd

    from monitor.config import SourceConfig
    from monitor.schema import ModelSchema

__all__ = ["BuiltinSource", "LogSource", "LogWindow", "SqlSource", "make_source"]

META_COLUMNS = (
    "request_id", "ts", "model_version", "prediction", "latency_ms", "error", "error_message"
)


@dataclass(frozen=True)
class LogWindow:
    """The logs of one window: per-row fields and the features exactly as received.

    ``features`` has one column per feature name seen in the window; a value that
    did not fit the column's type keeps its own Python type (object column).
    """

    start: datetime
    end: datetime
    meta: pd.DataFrame
    features: pd.DataFrame
    probabilities: pd.DataFrame

    @property
    def rows(self) -> int:
        return len(self.meta)


class LogSource(Protocol):
    """Reads one model's logs. Raises ``DatabaseError`` when the source cannot be read."""

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        """Rows with ``start <= time < end``."""
        ...

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        """Earliest and latest inference time, or (None, None) when there are no logs."""
        ...


def _frames(
    start: datetime,
    end: datetime,
    meta_rows: list[tuple[Any, ...]],
    features: list[dict[str, Any]],
    probabilities: list[dict[str, Any] | None],
) -> LogWindow:
    import pandas as pd

    meta = pd.DataFrame.from_records(meta_rows, columns=list(META_COLUMNS))
    if not meta.empty:
        meta["ts"] = pd.to_datetime(meta["ts"], utc=True)
    feats = pd.DataFrame.from_records(features) if features else pd.DataFrame(index=meta.index)
    probs = pd.DataFrame.from_records([p or {} for p in probabilities], index=meta.index)
    return LogWindow(start=start, end=end, meta=meta, features=feats, probabilities=probs)


def _reading(engine: Engine, what: str) -> Any:
    """Context that turns driver errors into one-line ``DatabaseError``s."""

    class _Guard:
        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            if isinstance(exc, sa.exc.OperationalError | sa.exc.ProgrammingError):
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise DatabaseError(
                    f"cannot read {what} at {safe_url(str(engine.url))}: {reason}"
                ) from None
            return False

    return _Guard()


class BuiltinSource:
    """mqm's own ``inference_logs`` table."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine = engine
        self.model = model

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        t = inference_logs
        query = (
            sa.select(
                t.c.request_id, t.c.ts, t.c.model_version, t.c.prediction, t.c.latency_ms,
                t.c.error, t.c.error_message, t.c.features, t.c.probabilities,
            )
            .where(t.c.model == self.model, t.c.ts >= start, t.c.ts < end)
            .order_by(t.c.ts, t.c.id)
        )
        with _reading(self.engine, "inference logs"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        meta = [tuple(r[:7]) for r in rows]
        return _frames(start, end, meta, [r[7] for r in rows], [r[8] for r in rows])

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        t = inference_logs
        query = sa.select(sa.func.min(t.c.ts), sa.func.max(t.c.ts)).where(t.c.model == self.model)
        with _reading(self.engine, "inference logs"), self.engine.connect() as conn:
            low, high = conn.execute(query).one()
        # min()/max() bypass the column type on SQLite: coerce back to aware UTC.
        return _aware(low), _aware(high)


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    from monitor.store.logs import parse_time

    return parse_time("timestamp", value)


class SqlSource:
    """A user's own table or query, mapped to mqm's fields through ``columns``.

    Times are compared as timestamps; on SQLite a text time column must hold ISO 8601
    text (it is normalised with ``datetime()`` before comparing). SQLite has no
    boolean type and returns 0/1, so for features declared bool exactly 0 and 1 are
    read as false and true; any other value is kept and reported by the schema check.
    """

    def __init__(self, engine: Engine, config: SourceConfig, schema: ModelSchema) -> None:
        self.engine = engine
        self.config = config
        self.schema = schema
        if config.table is not None:
            self._from: Any = sa.table(config.table)
            if "." in config.table:
                schema_name, name = config.table.rsplit(".", 1)
                self._from = sa.table(name, schema=schema_name)
        else:
            self._from = sa.text(str(config.query)).columns().subquery("src")

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

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        m = self.config.columns
        pred_col = m.prediction or self.schema.prediction.column
        meta_cols = [m.request_id, m.timestamp, m.model_version, pred_col, m.latency_ms,
                     m.error, m.error_message]
        if m.features_json:
            feature_cols = {"__features_json": m.features_json}
        else:
            feature_cols = {f: m.features.get(f, f) for f in self.schema.feature_names}
        proba_cols = (m.probabilities if m.probabilities is not None
                      else self.schema.prediction.probability_columns)
        selected = [c for c in meta_cols if c] + list(feature_cols.values()) + list(
            proba_cols.values())
        query = (
            sa.select(*[self._col(c) for c in dict.fromkeys(selected)])
            .select_from(self._from)
            .where(self._time() >= self._bound(start), self._time() < self._bound(end))
        )
        with _reading(self.engine, "the log source"), self.engine.connect() as conn:
            result = conn.execute(query)
            names = list(result.keys())
            rows = [dict(zip(names, r, strict=True)) for r in result]
        if rows:
            missing = [c for c in selected if c not in rows[0]]
            if missing:
                raise ConfigError(f"log source: columns not found: {', '.join(missing)}")
        bool_features = [f.name for f in self.schema.features if f.type == "bool"]
        meta = []
        features: list[dict[str, Any]] = []
        probabilities: list[dict[str, Any] | None] = []
        import json

        for row in rows:
            meta.append(tuple(row.get(c) if c else None for c in meta_cols))
            if m.features_json:
                raw = row[m.features_json]
                features.append(json.loads(raw) if isinstance(raw, str) else dict(raw or {}))
            else:
                feats = {f: row[c] for f, c in feature_cols.items()}
                for name in bool_features:
                    value = feats.get(name)
                    if type(value) is int and value in (0, 1):
                        feats[name] = bool(value)
                features.append(feats)
            probabilities.append({k: row[c] for k, c in proba_cols.items()} or None)
        window = _frames(start, end, meta, features, probabilities)
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
        return _aware(low), _aware(high)


def make_source(
    engine: Engine, model: str, config: SourceConfig, schema: ModelSchema
) -> LogSource:
    """The configured source; a sql source with its own URL gets its own engine."""
    if config.kind == "builtin":
        return BuiltinSource(engine, model)
    if config.url:
        from monitor.store.db import create_engine

        engine = create_engine(config.url)
    return SqlSource(engine, config, schema)
