"""PostgreSQL advisory locks: their keys, and a session-level lock held on a connection
of its own (the scheduler's leader lock; ``monitor.serve.leader`` decides what holding
it means).

PostgreSQL releases a session-level lock when the session ends (process killed, host
or network gone), so closing the connection is the release, and a holder that vanished
needs no cleanup.
"""

from __future__ import annotations

import contextlib
import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

__all__ = ["LOCK_NAME", "URL", "SessionLock", "advisory_key"]

LOCK_NAME = "mqm-scheduler"


def advisory_key(name: str = LOCK_NAME) -> int:
    """The 64-bit PostgreSQL advisory-lock key of ``name`` (stable across processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class SessionLock:
    """A session-level advisory lock on ``key``, on a connection of its own.

    The connection is outside any pool (closing it ends the session, which releases
    the lock) and in autocommit (no transaction left open for hours). It asks the
    server for TCP keepalives so that the server notices a vanished holder, and sets
    ``application_name`` (default ``mqm-scheduler``) so that ``pg_stat_activity``
    shows it. ``try_lock`` and ``check`` raise the driver's errors; ``close`` never
    raises.
    """

    def __init__(self, url: URL | str, key: int, *, application_name: str = LOCK_NAME) -> None:
        from sqlalchemy.pool import NullPool

        self.key = key
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

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect()
            try:
                # Server-side keepalives for this session only: a holder whose host dies
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

    def try_lock(self) -> bool:
        """Take the lock if no other session holds it (opening the session first when
        needed); True when this session holds it."""
        return bool(self._connection().execute(
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
