"""PostgreSQL advisory locks, and the scheduler's model leases: their SQL and connection
(``monitor.serve.leader`` decides what holding them means).

A **lease** (table ``model_leases``) gives one replica of ``mqm serve`` a model's scheduled
work until ``expires_at``; the holder renews it every few seconds, and once it lapses
(its holder stalled, or is gone) another replica takes it over and raises its fencing
``token``. Expiry is judged by the database's clock, so replicas need no synchronised
clocks. Each guarded write checks the token in its own transaction (``check_fence``):
correctness does not depend on any session ending.

A replica's **presence** (table ``scheduler_replicas``) is renewed with its leases; the
live ones share the models. Each replica also holds a session-level advisory lock of its
own on a dedicated connection (``SessionLock``), the one its lease statements use.
PostgreSQL frees that lock when the session ends (process killed, host or network gone),
so the others notice a dead replica at their next round and free its leases at once
(``LeaseSession.reap``), instead of waiting for them to expire. A stalled replica keeps
its session, and is handed over when its leases expire.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from monitor.errors import MonitorError
from monitor.store.tables import model_leases, scheduler_replicas

__all__ = [
    "LOCK_NAME",
    "URL",
    "Fence",
    "LeaseLost",
    "LeaseRow",
    "LeaseSession",
    "SessionLock",
    "advisory_key",
    "bound_transaction",
    "check_fence",
    "lease_rows",
]

LOCK_NAME = "mqm-scheduler"


def advisory_key(name: str = LOCK_NAME) -> int:
    """The 64-bit PostgreSQL advisory-lock key of ``name`` (stable across processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LeaseLost(MonitorError):
    """This replica no longer holds the model's lease (another replica took it over, or it
    was released): the write was refused and rolled back."""


# --- fencing: what a guarded write checks in its own transaction ------------------------


@dataclass(frozen=True)
class Fence:
    """A write made under ``holder``'s lease of ``model`` with ``token``. ``timeout``
    (seconds) bounds, on PostgreSQL, how long the write's transaction may sit idle (a
    writer stalled inside its transaction is cut off by the server, so its row locks
    cannot hold up the replica that took over) and, doubled, how long it waits for a
    row lock."""

    model: str
    holder: str
    token: int
    timeout: float


def bound_transaction(conn: Connection, fence: Fence) -> None:
    """On PostgreSQL: bound the caller's transaction by ``fence.timeout`` (see ``Fence``);
    elsewhere nothing (SQLite has one writer at a time, and a busy timeout)."""
    if conn.dialect.name != "postgresql":
        return
    millis = max(1, round(fence.timeout * 1000))
    # A stalled writer is cut off after ``timeout`` idle; one waiting for it gives up
    # only after twice that, by when the stalled one's locks are gone.
    conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {millis}")
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {2 * millis}")


def check_fence(conn: Connection, fence: Fence) -> None:
    """In the caller's transaction: raise ``LeaseLost`` unless ``fence.holder`` still holds
    the model's lease under ``fence.token`` (which rolls the write back)."""
    t = model_leases
    row = conn.execute(sa.select(t.c.holder, t.c.token)
                       .where(t.c.model == fence.model)).first()
    if row is None or row.holder != fence.holder or row.token != fence.token:
        now = "free" if row is None or row.holder is None else \
            f"held by {row.holder} (token {row.token})"
        raise LeaseLost(f"model {fence.model!r}: this replica's lease (token {fence.token}) "
                        f"is gone, the lease is {now}; the write is refused")


# --- reading the leases (status, readiness) -------------------------------------------


@dataclass(frozen=True)
class LeaseRow:
    """A model's lease as stored. ``lapsed``: nobody holds it now (released, or not renewed
    in time), judged by the database's clock. ``host`` and ``pid``: the holder's, when it
    is a live replica row."""

    model: str
    holder: str | None
    token: int
    expires_at: datetime
    lapsed: bool
    host: str | None
    pid: int | None


def lease_rows(engine: Engine) -> dict[str, LeaseRow]:
    """Every stored model lease, by model (none on a store whose scheduler always leads)."""
    t, r = model_leases, scheduler_replicas
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            now = conn.exec_driver_sql("SELECT timezone('UTC', now())").scalar_one()
            now = now.replace(tzinfo=UTC)
        else:
            now = datetime.now(UTC)
        rows = conn.execute(
            sa.select(t.c.model, t.c.holder, t.c.token, t.c.expires_at, r.c.host, r.c.pid)
            .select_from(t.outerjoin(r, r.c.replica == t.c.holder))).all()
    return {row.model: LeaseRow(model=row.model, holder=row.holder, token=int(row.token),
                                expires_at=row.expires_at,
                                lapsed=row.holder is None or row.expires_at <= now,
                                host=row.host, pid=row.pid)
            for row in rows}


# --- a session of its own -------------------------------------------------------------


class SessionLock:
    """A session-level advisory lock on ``key``, on a connection of its own.

    The connection is outside any pool (closing it ends the session, which releases
    the lock) and in autocommit (no transaction left open for hours). It asks the
    server for TCP keepalives so that the server notices a vanished holder, and sets
    ``application_name`` (default ``mqm-scheduler``) so that ``pg_stat_activity``
    shows it; ``statement_timeout`` (seconds) bounds each statement on it. ``try_lock``,
    ``check`` and ``connection`` raise the driver's errors; ``close`` never raises.
    """

    def __init__(self, url: URL | str, key: int, *, application_name: str = LOCK_NAME,
                 statement_timeout: float | None = None) -> None:
        from sqlalchemy.pool import NullPool

        self.key = key
        self._statement_timeout = statement_timeout
        self._engine = sa.create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
            connect_args={"application_name": application_name, "connect_timeout": 10,
                          # The client side notices a dead server or network, too.
                          "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                          "keepalives_count": 3, "tcp_user_timeout": 30_000},
        )
        self._conn: Connection | None = None

    @property
    def connected(self) -> bool:
        """Whether the session is open (the lock may be held only then)."""
        return self._conn is not None

    def connection(self) -> Connection:
        """The session's connection, opened when needed (without taking the lock)."""
        if self._conn is None:
            conn = self._engine.connect()
            try:
                # Server-side keepalives for this session only: a holder whose host dies
                # is dropped (and its lock freed) in ~25 s instead of the OS default 2 h.
                settings = ["tcp_keepalives_idle = 10", "tcp_keepalives_interval = 5",
                            "tcp_keepalives_count = 3"]
                if self._statement_timeout is not None:
                    settings.append(
                        f"statement_timeout = {max(1, round(self._statement_timeout * 1000))}")
                for setting in settings:
                    conn.exec_driver_sql(f"SET {setting}")
            except BaseException:
                # Not kept, so closed here: left to the garbage collector, an open
                # driver connection is a ResourceWarning at some random later time.
                with contextlib.suppress(Exception):
                    conn.invalidate()
                    conn.close()
                raise
            self._conn = conn
        return self._conn

    def try_lock(self) -> bool:
        """Take the lock if no other session holds it (opening the session first when
        needed); True when this session holds it."""
        return bool(self.connection().execute(
            sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())

    def check(self) -> None:
        """One round trip on the open session; raises when it is gone (or none is open)."""
        if self._conn is None:
            raise RuntimeError("the lock's session is not open")
        self._conn.exec_driver_sql("SELECT 1")

    def backend_pid(self) -> int | None:
        """The server process of the session (None: not open)."""
        if self._conn is None:
            return None
        return int(self._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def close(self) -> None:
        """End the session, which releases the lock; a no-op when none is open."""
        conn, self._conn = self._conn, None
        if conn is not None:  # already broken, maybe: each step on its own
            with contextlib.suppress(Exception):
                conn.invalidate()  # closes the DBAPI connection: the session ends
            with contextlib.suppress(Exception):
                conn.close()

    def dispose(self) -> None:
        """Close the session and the engine; the lock cannot be used afterwards."""
        self.close()
        self._engine.dispose()


# --- a replica's presence and leases (PostgreSQL) ---------------------------------------

_NOW = "timezone('UTC', now())"
_UNTIL = f"{_NOW} + make_interval(secs => CAST(:ttl AS double precision))"


class LeaseSession:
    """One replica's presence and model leases, on a session of its own (``SessionLock``)
    that holds the replica's advisory lock while it lives. PostgreSQL only.

    ``replica``: this replica's id, unique per process; ``ttl``: seconds a lease or a
    presence lasts unless renewed. Every method runs one or two statements in autocommit
    and raises the driver's errors; ``close`` never raises.
    """

    def __init__(self, url: URL | str, replica: str, *, ttl: float, host: str,
                 pid: int) -> None:
        self.replica = replica
        self.ttl = ttl
        self.host = host[:255]
        self.pid = pid
        self.key = advisory_key(f"{LOCK_NAME}:{replica}")
        self._lock = SessionLock(url, self.key, application_name=LOCK_NAME,
                                 statement_timeout=max(ttl, 5.0))
        self._locked = False

    def _run(self, sql: str, **params: Any) -> sa.CursorResult[Any]:
        return self._lock.connection().execute(sa.text(sql), params)

    def beat(self) -> None:
        """Hold this replica's advisory lock (opening the session when needed) and renew
        its presence for ``ttl`` seconds."""
        if not self._lock.connected or not self._locked:
            self._locked = False
            if not self._lock.try_lock():
                # Only a session of ours that the server has not dropped yet holds it.
                raise RuntimeError("this replica's lock is held by another session")
            self._locked = True
        self._run(
            "INSERT INTO scheduler_replicas "
            "(replica, lock_key, host, pid, started_at, seen_at, expires_at) "
            f"VALUES (:replica, :key, :host, :pid, {_NOW}, {_NOW}, {_UNTIL}) "
            "ON CONFLICT (replica) DO UPDATE SET lock_key = EXCLUDED.lock_key, "
            "seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at",
            replica=self.replica, key=self.key, host=self.host, pid=self.pid, ttl=self.ttl)

    def renew(self) -> dict[str, int]:
        """Extend every lease this replica still holds by ``ttl``; {model: token} of them.
        A lease that another replica took over is not among them."""
        rows = self._run(
            f"UPDATE model_leases SET expires_at = {_UNTIL}, renewed_at = {_NOW} "
            "WHERE holder = :replica RETURNING model, token",
            replica=self.replica, ttl=self.ttl)
        return {str(m["model"]): int(m["token"]) for m in rows.mappings()}

    def reap(self) -> list[str]:
        """Forget the replicas whose session ended (their advisory lock is free) and free
        their leases; the models freed. A stalled replica keeps its session: it is
        handed over when its leases expire instead."""
        rows = self._run(
            "WITH dead AS (DELETE FROM scheduler_replicas WHERE replica <> :replica "
            "AND pg_try_advisory_xact_lock(lock_key) RETURNING replica) "
            f"UPDATE model_leases SET holder = NULL, expires_at = {_NOW} "
            "WHERE holder IN (SELECT replica FROM dead) RETURNING model",
            replica=self.replica)
        return [str(row[0]) for row in rows]

    def live_replicas(self) -> int:
        """How many replicas renewed their presence in time (this one included)."""
        count = self._run(f"SELECT count(*) FROM scheduler_replicas WHERE expires_at > {_NOW}"
                          ).scalar_one()
        return max(1, int(count))

    def lapsed(self, models: Sequence[str]) -> list[str]:
        """Of ``models``, those whose lease nobody holds now (creating the missing ones)."""
        if not models:
            return []
        connection = self._lock.connection()
        connection.execute(
            sa.text("INSERT INTO model_leases (model, token, expires_at) "
                    f"VALUES (:model, 0, {_NOW}) ON CONFLICT (model) DO NOTHING"),
            [{"model": m} for m in models])
        rows = self._run(
            "SELECT model FROM model_leases WHERE model = ANY(:models) "
            f"AND (holder IS NULL OR expires_at <= {_NOW}) ORDER BY model",
            models=list(models))
        return [str(row[0]) for row in rows]

    def acquire(self, model: str) -> int | None:
        """Take ``model``'s lease if nobody holds it now; its new token, or None."""
        token = self._run(
            f"UPDATE model_leases SET holder = :replica, token = token + 1, "
            f"expires_at = {_UNTIL}, acquired_at = {_NOW}, renewed_at = {_NOW} "
            f"WHERE model = :model AND (holder IS NULL OR expires_at <= {_NOW}) "
            "RETURNING token",
            replica=self.replica, model=model, ttl=self.ttl).scalar_one_or_none()
        return None if token is None else int(token)

    def release(self, model: str, token: int) -> None:
        """Give ``model``'s lease up, if this replica still holds it under ``token``."""
        self._run(f"UPDATE model_leases SET holder = NULL, expires_at = {_NOW} "
                  "WHERE model = :model AND holder = :replica AND token = :token",
                  model=model, replica=self.replica, token=token)

    def leave(self) -> None:
        """Give every lease up and remove this replica's presence (a clean stop)."""
        self._run(f"UPDATE model_leases SET holder = NULL, expires_at = {_NOW} "
                  "WHERE holder = :replica", replica=self.replica)
        self._run("DELETE FROM scheduler_replicas WHERE replica = :replica",
                  replica=self.replica)

    def backend_pid(self) -> int | None:
        """The server process of the session (for operators and tests)."""
        return self._lock.backend_pid()

    def close(self) -> None:
        """End the session (which frees the advisory lock); it reopens when needed."""
        self._locked = False
        self._lock.close()

    def dispose(self) -> None:
        """End the session and the engine for good."""
        self._locked = False
        self._lock.dispose()
