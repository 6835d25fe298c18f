"""A load staged apart and published at once: all or nothing, without a long lock.

A file of 800,000 log rows takes half a minute to read and check in Python. Written
straight into ``inference_logs`` in one transaction, it held SQLite's only write lock
that whole time, so ``mqm fallback set`` (the operator's lever) failed with "database
is locked" after the 30 s busy timeout. Here the rows go first to a temporary table on
the load's own connection, in transactions of at most ``batch`` rows:

- on SQLite a temporary table lives in a database of its own, private to the
  connection, so staging takes no lock on the store at all;
- on PostgreSQL it is not WAL-logged and locks nothing that other sessions use.

``publish()`` then copies the staged rows into the real table with one
``INSERT ... SELECT`` that skips keys already stored, in one short transaction: the
load becomes visible at once, or (if anything fails before) not at all, and the one
lock other writers wait for is held for that statement only (SQL speed, no Python per
row). A crash before the end leaves nothing behind: the temporary table goes with its
connection. The Parquet fast path (``monitor.store.arrow_logs``) fills the same table
with whole batches (``add_many``, ``add_copy``) and reuses ``publish()``.

On PostgreSQL that fast path uses ``DirectLoad`` instead: its rows are checked before
they are copied and nothing reads them before the commit, so they are copied straight
into the table in one transaction, each row written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as sa

from monitor.errors import DatabaseError, first_line
from monitor.store.db import driver_connection, safe_url

__all__ = ["DirectConflict", "DirectLoad", "StagedLoad", "database_error", "direct_load",
           "staged_load"]


class StagedLoad:
    """Rows of one load for ``table``, staged on one connection until ``publish()``."""

    def __init__(self, conn: sa.Connection, table: sa.Table, columns: tuple[str, ...]) -> None:
        dialect = conn.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"mqm's own tables need SQLite or PostgreSQL, not {dialect}")
        self.conn = conn
        self.table = table
        self.columns = columns
        self.sqlite = dialect == "sqlite"
        self.name = f"mqm_staged_{table.name}"
        self.staged = 0
        self._names = ", ".join(columns)
        with self._transaction() as raw:
            cur = raw.cursor()
            try:
                cur.execute(f"DROP TABLE IF EXISTS {self._staging}")
                if self.sqlite:
                    # Untyped columns keep each value as bound; the real table's column
                    # affinities apply at publish, exactly as on a direct insert.
                    cur.execute(f"CREATE TEMP TABLE {self.name} ({self._names})")
                else:
                    # The real table's column types, without its constraints, indexes or
                    # defaults (a copied id default would draw from its sequence).
                    cur.execute(f"CREATE TEMP TABLE {self.name} AS "
                                f"SELECT {self._names} FROM {table.name} LIMIT 0")
            finally:
                cur.close()

    @property
    def _staging(self) -> str:
        return f"temp.{self.name}" if self.sqlite else f"pg_temp.{self.name}"

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One transaction on the load's connection; driver errors become DatabaseError."""
        dbapi = self.conn.dialect.loaded_dbapi
        try:
            with self.conn.begin():
                yield driver_connection(self.conn)
        except dbapi.Error as exc:
            raise _database_error(self.conn, exc) from exc
        except sa.exc.DBAPIError as exc:
            raise _database_error(self.conn, exc.orig or exc) from exc

    def add(self, rows: Iterable[tuple[Any, ...]], *, batch: int = 10_000) -> int:
        """Stage ``rows`` (tuples in ``columns`` order), ``batch`` per transaction; return
        how many. The rows are read between transactions, never inside one."""
        added = 0
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch:
                added += self._stage(chunk)
                chunk = []
        if chunk:
            added += self._stage(chunk)
        return added

    def _stage(self, chunk: list[tuple[Any, ...]]) -> int:
        with self._transaction() as raw:
            if self.sqlite:
                marks = ", ".join("?" * len(self.columns))
                raw.executemany(f"INSERT INTO {self._staging} ({self._names}) VALUES ({marks})",
                                chunk)
            else:
                with raw.cursor() as cur, cur.copy(
                        f"COPY {self._staging} ({self._names}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row(row)
        self.staged += len(chunk)
        return len(chunk)

    def add_many(self, rows: Iterable[tuple[Any, ...]], n: int) -> int:
        """Stage ``n`` rows (SQLite) in one transaction and one ``executemany``, read as
        they are inserted: the rows of a batch already checked and encoded."""
        with self._transaction() as raw:
            marks = ", ".join("?" * len(self.columns))
            raw.executemany(f"INSERT INTO {self._staging} ({self._names}) VALUES ({marks})",
                            rows)
        self.staged += n
        return n

    def add_copy(self, data: Any, n: int) -> int:
        """Stage ``n`` rows (PostgreSQL) given as COPY text, ``columns`` in order, in one
        transaction."""
        with self._transaction() as raw, raw.cursor() as cur, cur.copy(
                f"COPY {self._staging} ({self._names}) FROM STDIN") as copy:
            copy.write(data)
        self.staged += n
        return n

    def publish(self, key: tuple[str, ...] = ("model", "request_id"), *,
                checked: bool = False) -> int:
        """Copy the staged rows into the table in one transaction, in the order staged,
        skipping rows whose ``key`` is stored already; return how many were added.

        ``checked``: the loader left out the keys stored when it looked, so on
        PostgreSQL a plain INSERT is tried first (ON CONFLICT costs 40% more per row);
        a key another writer stored since makes it roll back to ON CONFLICT."""
        return len(self._publish(key, checked, ids=False))

    def publish_ids(self, key: tuple[str, ...] = ("model", "request_id"), *,
                    checked: bool = False) -> Sequence[int]:
        """``publish``, returning the ids the table gave the rows added, ascending.

        The table gives them in the order staged, so with every row added the first
        staged row has the smallest id. SQLite gives a new row the largest rowid plus
        one, and the publish holds the only write lock: the rows added have the last
        ids, read after the insert (RETURNING costs 0.5 s per million rows). On
        PostgreSQL another writer's ids may come between: RETURNING id."""
        return self._publish(key, checked, ids=True)

    def _publish(self, key: tuple[str, ...], checked: bool, *, ids: bool) -> Sequence[int]:
        """The ids of the rows added with ``ids``, else a sequence as long."""
        if not self.staged:
            return range(0)
        tail = " RETURNING id" if ids and not self.sqlite else ""

        def added(cur: Any) -> Sequence[int]:
            if ids:
                return sorted(row[0] for row in cur.fetchall())
            return range(max(int(cur.rowcount), 0))

        with self._transaction() as raw:
            cur = raw.cursor()
            try:
                if self.sqlite:
                    before = raw.total_changes
                    cur.execute(f"INSERT OR IGNORE INTO main.{self.table.name} ({self._names}) "
                                f"SELECT {self._names} FROM {self._staging} ORDER BY rowid")
                    count = int(raw.total_changes - before)
                    if not ids or not count:
                        return range(count)
                    cur.execute(f"SELECT max(id) FROM main.{self.table.name}")
                    last = int(cur.fetchone()[0])
                    return range(last - count + 1, last + 1)
                # A temporary table is never scanned in parallel nor reordered: rows come
                # back in the order they were copied in.
                insert = (f"INSERT INTO {self.table.name} ({self._names}) "
                          f"SELECT {self._names} FROM {self._staging}")
                if checked:
                    from psycopg.errors import UniqueViolation

                    cur.execute("SAVEPOINT mqm_publish")
                    try:
                        cur.execute(insert + tail)
                    except UniqueViolation:
                        cur.execute("ROLLBACK TO SAVEPOINT mqm_publish")
                    else:
                        done = added(cur)
                        cur.execute("RELEASE SAVEPOINT mqm_publish")
                        return done
                cur.execute(f"{insert} ON CONFLICT ({', '.join(key)}) DO NOTHING" + tail)
                return added(cur)
            finally:
                cur.close()

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """``sql`` (a count over the staged rows, which it names ``{staged}``) in a short
        read transaction; ``?`` marks parameters on both backends."""
        with self._transaction() as raw:
            cur = raw.cursor()
            try:
                query = sql.format(staged=self._staging)
                cur.execute(query if self.sqlite else query.replace("?", "%s"), params)
                return int(cur.fetchone()[0])
            finally:
                cur.close()

    def drop(self) -> None:
        """Drop the staged rows (also done when the connection closes)."""
        with self._transaction() as raw:
            cur = raw.cursor()
            try:
                cur.execute(f"DROP TABLE IF EXISTS {self._staging}")
            finally:
                cur.close()


@contextmanager
def staged_load(engine: sa.Engine, table: sa.Table, columns: tuple[str, ...]
                ) -> Iterator[StagedLoad]:
    """A ``StagedLoad`` on a connection of its own, dropped (unpublished rows and all) at
    the end of the block."""
    with engine.connect() as conn:
        load = StagedLoad(conn, table, columns)
        try:
            yield load
        finally:
            try:
                load.drop()
            except DatabaseError:
                # The connection is going back to the pool broken or about to be closed;
                # its temporary table goes with the session.
                conn.invalidate()


class DirectConflict(Exception):
    """A direct load met a key another writer stored after the loader looked: it was
    rolled back whole, and the caller loads again through a staged load."""


class DirectLoad:
    """A load on PostgreSQL copied straight into ``table`` in one transaction, committed
    by ``publish()``: all or nothing as a staged load, with each row written once.

    A staged load writes every row twice (``COPY`` into its temporary table, then
    ``INSERT ... SELECT``), which costs about 40% more than a plain ``COPY`` of the same
    rows. Here the rows go in by ``COPY`` as a batch is ready; nobody sees them before
    the commit. The locks held meanwhile are those any insert takes (other writers and
    readers go on; the compactor's brief SHARE lock waits, then retries later) plus the
    keys copied: a writer of one of the same keys waits for the outcome.

    Only for rows whose keys the loader found not stored (``checked``): a key another
    writer stored since fails the ``COPY``, the load is rolled back and
    ``DirectConflict`` raised. Ids: each batch's, read from the table's sequence around
    its ``COPY`` (``ids``), ascending in the order copied."""

    sqlite = False

    def __init__(self, conn: sa.Connection, table: sa.Table, columns: tuple[str, ...]) -> None:
        if conn.dialect.name != "postgresql":
            raise NotImplementedError("a direct load is for PostgreSQL")
        self.conn = conn
        self.table = table
        self.columns = columns
        self.staged = 0
        self._names = ", ".join(columns)
        self._transaction: sa.RootTransaction | None = None
        self._ids: list[Any] = []
        self._sequence: str | None = None

    def _raw(self) -> Any:
        if self._transaction is None:
            self._transaction = self.conn.begin()
        return driver_connection(self.conn)

    def add_copy(self, data: Any, n: int) -> int:
        """Copy ``n`` rows given as COPY text, ``columns`` in order, into the table."""
        from psycopg.errors import UniqueViolation

        try:
            raw = self._raw()
            with raw.cursor() as cur:
                if self._sequence is None:
                    cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [self.table.name])
                    self._sequence = cur.fetchone()[0]
                # The ids the COPY draws lie above the sequence's last value now (drawn
                # by anyone) and up to this session's currval after it.
                cur.execute(f"SELECT last_value, is_called FROM {self._sequence}")
                value, called = cur.fetchone()
                before = int(value) if called else int(value) - 1
                self._copy(cur, data)
                cur.execute("SELECT currval(%s)", [self._sequence])
                last = int(cur.fetchone()[0])
                self._ids.append(self._batch_ids(cur, before, last, n))
        except UniqueViolation as exc:
            self.drop()
            raise DirectConflict(first_line(exc)) from None
        except self.conn.dialect.loaded_dbapi.Error as exc:
            self.drop()
            raise _database_error(self.conn, exc) from exc
        self.staged += n
        return n

    def _copy(self, cur: Any, data: Any) -> None:
        with cur.copy(f"COPY {self.table.name} ({self._names}) FROM STDIN") as copy:
            copy.write(data)

    def _batch_ids(self, cur: Any, before: int, last: int, n: int) -> Any:
        import numpy as np

        if last - before == n:  # no other writer drew from the sequence meanwhile
            return np.arange(before + 1, last + 1, dtype=np.int64)
        # Another writer's ids came between: this transaction's rows are those its own
        # id wrote (xmin is the 32 low bits of the transaction id).
        cur.execute(f"SELECT id FROM {self.table.name} WHERE id > %s AND id <= %s AND "
                    "xmin::text = (pg_current_xact_id()::text::bigint %% 4294967296)::text "
                    "ORDER BY id", [before, last])
        ids = np.array([row[0] for row in cur.fetchall()], dtype=np.int64)
        if len(ids) != n:
            raise DatabaseError(f"a load of {n} rows found {len(ids)} of its ids")
        return ids

    def publish(self, key: tuple[str, ...] = ("model", "request_id"), *,
                checked: bool = False) -> int:
        """Commit the rows copied; return how many."""
        return len(self.publish_ids(key, checked=checked))

    def publish_ids(self, key: tuple[str, ...] = ("model", "request_id"), *,
                    checked: bool = False) -> Sequence[int]:
        """Commit the rows copied; return their ids, ascending, in the order copied."""
        import numpy as np

        if not checked:
            raise ValueError("a direct load takes rows whose keys were found not stored")
        if self._transaction is None:
            return range(0)
        try:
            self._transaction.commit()
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise _database_error(self.conn, exc) from exc
        except sa.exc.DBAPIError as exc:
            raise _database_error(self.conn, exc.orig or exc) from exc
        finally:
            self._transaction = None
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        self._ids = []
        return cast(Sequence[int], ids)

    def drop(self) -> None:
        """Roll back what is not committed."""
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            try:
                transaction.rollback()
            except sa.exc.DBAPIError:
                self.conn.invalidate()
        self._ids = []
        self.staged = 0


@contextmanager
def direct_load(engine: sa.Engine, table: sa.Table, columns: tuple[str, ...]
                ) -> Iterator[DirectLoad]:
    """A ``DirectLoad`` on a connection of its own, rolled back unless published."""
    with engine.connect() as conn:
        load = DirectLoad(conn, table, columns)
        try:
            yield load
        finally:
            load.drop()


def database_error(conn: sa.Connection, exc: BaseException) -> DatabaseError:
    """A driver's error on ``conn`` as mqm's ``DatabaseError`` (a load's words)."""
    return _database_error(conn, exc)


def _database_error(conn: sa.Connection, exc: BaseException) -> DatabaseError:
    where = safe_url(conn.engine.url.render_as_string(hide_password=False))
    reason = first_line(exc)
    if "database is locked" in reason or "database table is locked" in reason:
        return DatabaseError(
            f"the database at {where} is locked: another process kept writing longer than "
            "the 30 s busy timeout (a long check run, compaction or another load?)")
    return DatabaseError(f"the database at {where} refused the load: {reason}")
