"""Which models this replica of ``mqm serve`` runs: per-model leases in the store on
PostgreSQL (``ModelLeases``), every model on SQLite (one file, one process:
``AlwaysLeader``).

A lease is held until it expires unless renewed; the replicas renew theirs every round
(``serve.lease_renew``) and take over the ones that lapsed, each up to its fair share of
the models (the models divided by the live replicas, rounded up). So a replica that
stalls (SIGSTOP, a GC pause, a frozen VM, a hung driver call) loses its models after
``serve.lease`` seconds although its database session lives on, and a replica that dies
loses them at the next round of another (its session's advisory lock is free). Holding a
lease is not trusted on its own: every write made under it is fenced by its token in the
write's own transaction (``monitor.store.locks.check_fence``). The SQL is the store's
(``monitor.store.locks``); this module decides what holding a lease means.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from monitor.errors import first_line
from monitor.store.locks import LOCK_NAME, URL, Fence, LeaseSession, advisory_key

__all__ = [
    "LOCK_NAME",
    "AlwaysLeader",
    "Election",
    "Leadership",
    "Lease",
    "ModelLeases",
    "advisory_key",
    "replica_id",
]

_log = logging.getLogger("mqm.scheduler")


def replica_id() -> str:
    """A name for this replica, unique per process: host, process id and a random part."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Lease:
    """This replica's lease of ``model``. ``token``: its fencing token (None: no lease in
    the store, this process always leads). ``valid_until``: ``time.monotonic()`` after
    which no new work may start under it (until renewed): by then another replica may
    hold it."""

    model: str
    token: int | None
    valid_until: float = math.inf

    def valid(self) -> bool:
        return time.monotonic() < self.valid_until

    def fence(self, holder: str, timeout: float) -> Fence | None:
        """What a write under this lease checks in its transaction (None: nothing)."""
        if self.token is None:
            return None
        return Fence(model=self.model, holder=holder, token=self.token, timeout=timeout)


@dataclass(frozen=True)
class Election:
    """One round's outcome: the leases held after it, this replica's fair ``share`` of the
    models, the live ``replicas``; ``failed``: the store could not be asked (no leases)."""

    leases: dict[str, Lease] = field(default_factory=dict)
    share: int = 0
    replicas: int = 0
    failed: bool = False


class Leadership(Protocol):
    """Which models this replica runs. Methods never raise: a database error means "no
    leases" (and the next round tries again)."""

    replica: str

    def elect(self, models: Sequence[str]) -> Election:
        """One round: renew this replica's presence and leases, and take lapsed leases of
        ``models`` up to its fair share."""
        ...

    def release(self, lease: Lease) -> None:
        """Give one lease up (no-op when no longer held)."""
        ...

    def release_all(self) -> None:
        """Give every lease up and leave (a clean stop); the object is not used again."""
        ...


class AlwaysLeader:
    """SQLite and other single-process stores: this process runs every model."""

    def __init__(self) -> None:
        self.replica = replica_id()

    def elect(self, models: Sequence[str]) -> Election:
        return Election({m: Lease(m, None) for m in models}, share=len(models), replicas=1)

    def release(self, lease: Lease) -> None:
        pass

    def release_all(self) -> None:
        pass


class ModelLeases:
    """Per-model leases on PostgreSQL (``monitor.store.locks.LeaseSession``), lasting
    ``ttl`` seconds unless renewed. A failure of the session is logged once per outage
    and drops it (the other replicas then free this one's leases at once); the next
    round opens a new one."""

    def __init__(self, url: URL | str, *, ttl: float, replica: str | None = None) -> None:
        self.replica = replica or replica_id()
        self.ttl = ttl
        self._session = LeaseSession(url, self.replica, ttl=ttl, host=socket.gethostname(),
                                     pid=os.getpid())
        self._failing = False
        self._random = random.Random()

    def elect(self, models: Sequence[str]) -> Election:
        started = time.monotonic()
        session = self._session
        try:
            session.beat()
            renewed = session.renew()
            session.reap()
            replicas = session.live_replicas()
            share = math.ceil(len(models) / replicas)
            held = {m: Lease(m, token, started + self.ttl)
                    for m, token in renewed.items() if m in models}
            for m, token in renewed.items():
                if m not in held:  # a model the config no longer has
                    session.release(m, token)
            if len(held) < share:
                free = [m for m in session.lapsed(models) if m not in held]
                # Replicas start from different models, so that they seldom compete.
                self._random.shuffle(free)
                for m in free:
                    if len(held) >= share:
                        break
                    at = time.monotonic()
                    taken = session.acquire(m)
                    if taken is not None:
                        held[m] = Lease(m, taken, at + self.ttl)
        except Exception as exc:
            session.close()
            if not self._failing:  # once per outage, not every round
                _log.warning("mqm: the scheduler's leases cannot be renewed or taken: %s",
                             first_line(exc))
            self._failing = True
            return Election(failed=True)
        if self._failing:
            _log.info("mqm: the scheduler's lease session works again")
        self._failing = False
        return Election(held, share=share, replicas=replicas)

    def release(self, lease: Lease) -> None:
        if lease.token is None:
            return
        try:
            self._session.release(lease.model, lease.token)
        except Exception as exc:  # it lapses on its own
            _log.warning("mqm: cannot release the lease of %s: %s", lease.model,
                         first_line(exc))

    def release_all(self) -> None:
        try:
            if self._session.backend_pid() is not None:
                self._session.leave()
        except Exception as exc:  # the leases lapse, and the lock goes with the session
            _log.warning("mqm: cannot release the scheduler's leases: %s", first_line(exc))
        finally:
            self._session.dispose()

    def backend_pid(self) -> int | None:
        """The server process of the lease session (for operators and tests)."""
        try:
            return self._session.backend_pid()
        except Exception:
            return None
