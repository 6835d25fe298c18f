"""Which replica of ``mqm serve`` runs the scheduled checks: the one holding a PostgreSQL
session-level advisory lock; on SQLite (one file, one process) always this one.

PostgreSQL releases the lock when the holder's session ends (process killed, host or
network gone), so a follower that retries takes over without any cleanup.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from monitor.errors import first_line

__all__ = ["LOCK_NAME", "AdvisoryLock", "AlwaysLeader", "Leadership", "advisory_key"]

LOCK_NAME = "mqm-scheduler"
_log = logging.getLogger("mqm.scheduler")


def advisory_key(name: str = LOCK_NAME) -> int:
    """The 64-bit PostgreSQL advisory-lock key of ``name`` (stable across processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership(Protocol):
    """Who runs the jobs. Methods never raise: a database error means "not leader"."""

    def try_acquire(self) -> bool:
        """Become the leader if no one else is; True when this replica now leads."""
        ...

    def alive(self) -> bool:
        """Whether the lead taken by ``try_acquire`` still holds."""
        ...

    def release(self) -> None:
        """Give the lead up (no-op when not holding it)."""
        ...


class AlwaysLeader:
    """SQLite and other single-process stores: this process is the only scheduler."""

    def try_acquire(self) -> bool:
        return True

    def alive(self) -> bool:
        return True

    def release(self) -> None:
        pass


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock held on a connection of its own.

    The connection is outside any pool (closing it ends the session, which releases
    the lock) and in autocommit (no transaction left open for hours). It asks the
    server for TCP keepalives so that the server notices a vanished leader, and sets
    ``application_name`` to ``mqm-scheduler`` so that ``pg_stat_activity`` shows it.
    """

    def __init__(self, url: sa.URL, key: int | None = None) -> None:
        from sqlalchemy.pool import NullPool

        self.key = advisory_key() if key is None else key
        self._engine = sa.create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
            connect_args={"application_name": LOCK_NAME, "connect_timeout": 10,
                          # The client side notices a dead server or network, too.
                          "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                          "keepalives_count": 3, "tcp_user_timeout": 30_000},
        )
        self._conn: Connection | None = None
        self._held = False
        self._failing = False

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect()
            try:
                # Server-side keepalives for this session only: a leader whose host dies
                # is dropped (and its lock freed) in ~25 s instead of the OS default 2 h.
                for setting in ("tcp_keepalives_idle = 10", "tcp_keepalives_interval = 5",
                                "tcp_keepalives_count = 3"):
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

    def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:  # already broken, maybe: each step on its own
            with contextlib.suppress(Exception):
                conn.invalidate()  # closes the DBAPI connection: the session ends
            with contextlib.suppress(Exception):
                conn.close()

    def try_acquire(self) -> bool:
        try:
            got = bool(self._connection().execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
        except Exception as exc:
            self._drop()
            if not self._failing:  # once per outage, not every retry
                _log.warning("mqm: cannot take the scheduler lock: %s", first_line(exc))
            self._failing = True
            return False
        self._failing = False
        self._held = got
        return got

    def alive(self) -> bool:
        if not self._held or self._conn is None:
            return False
        try:
            self._conn.exec_driver_sql("SELECT 1")
            return True
        except Exception as exc:
            _log.warning("mqm: the scheduler lock's connection failed: %s", first_line(exc))
            self._drop()
            return False

    def backend_pid(self) -> int | None:
        """The server process of the lock's session (for operators and tests)."""
        if self._conn is None:
            return None
        return int(self._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def release(self) -> None:
        self._drop()
        self._engine.dispose()
