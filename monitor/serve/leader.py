"""Which replica of ``mqm serve`` runs the scheduled checks: the one holding a PostgreSQL
session-level advisory lock; on SQLite (one file, one process) always this one.

PostgreSQL releases the lock when the holder's session ends (process killed, host or
network gone), so a follower that retries takes over without any cleanup. The lock's
SQL and its connection are the store's (``monitor.store.locks``); this module decides
what holding it means.
"""

from __future__ import annotations

import logging
from typing import Protocol

from monitor.errors import first_line
from monitor.store.locks import LOCK_NAME, URL, SessionLock, advisory_key

__all__ = ["LOCK_NAME", "AdvisoryLock", "AlwaysLeader", "Leadership", "advisory_key"]

_log = logging.getLogger("mqm.scheduler")


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
    """The lead is a PostgreSQL session-level advisory lock (``SessionLock``) on ``key``
    (default: ``advisory_key()``). A failure of its connection is logged once per outage
    and drops the session, so the next attempt starts a new one."""

    def __init__(self, url: URL | str, key: int | None = None) -> None:
        self.key = advisory_key() if key is None else key
        self._session = SessionLock(url, self.key, application_name=LOCK_NAME)
        self._held = False
        self._failing = False

    def _drop(self) -> None:
        self._held = False
        self._session.close()

    def try_acquire(self) -> bool:
        try:
            got = self._session.try_lock()
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
        if not self._held or not self._session.connected:
            return False
        try:
            self._session.check()
            return True
        except Exception as exc:
            _log.warning("mqm: the scheduler lock's connection failed: %s", first_line(exc))
            self._drop()
            return False

    def backend_pid(self) -> int | None:
        """The server process of the lock's session (for operators and tests)."""
        return self._session.backend_pid()

    def release(self) -> None:
        self._held = False
        self._session.dispose()
