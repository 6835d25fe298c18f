"""Readiness of ``mqm serve`` (``GET /readyz``): the database answers, the scheduler
runs, and the last successful check run of every model this replica answers for is
recent enough.

With several replicas on PostgreSQL each model is run by the replica holding its lease.
A model whose lease another replica holds live is that replica's health: its freshness
is reported (with the lease: holder, expiry) but does not count towards this replica's
readiness, so that a stalled replica does not make the healthy ones unready. A model
whose lease lapsed (no replica runs it) or that this replica holds counts, as does every
model where the store keeps no leases (SQLite, one process).

Both the database and the scheduler's ``status()`` read the store; each is asked in a
worker thread and given at most ``timeout`` seconds, so that a hung database hangs
neither the probe nor the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import anyio

from monitor.config import Config
from monitor.errors import first_line
from monitor.policy import SUCCESSFUL_STATUSES
from monitor.serve.api_models import (
    Check,
    FreshnessCheck,
    ModelFreshness,
    ModelLease,
    Readiness,
    ReadyChecks,
    SchedulerCheck,
)
from monitor.store.db import Engine, ping
from monitor.store.locks import LeaseRow, lease_rows
from monitor.store.reads import StoreError, last_successes

__all__ = ["SchedulerStatus", "readiness"]

_log = logging.getLogger("mqm.api")


class SchedulerStatus(Protocol):
    """What the API needs of the scheduler (``monitor.serve.scheduler``).

    ``status()`` returns at least ``{"running": bool, "leader": bool}``, and
    ``"replica"`` (its name in the store's leases) where it has one; a replica that
    runs but leads no model is healthy (other replicas run the checks). Whatever it
    raises makes the readiness check fail.
    """

    def status(self) -> dict[str, Any]: ...


async def readiness(engine: Engine, config: Config, scheduler: SchedulerStatus | None, *,
                    started_at: datetime, timeout: float) -> Readiness:
    """Every check, each given at most ``timeout`` seconds. ``started_at``: when the
    service started (a model that never ran is forgiven until it is old enough)."""
    unanswered = f"no answer within {timeout:g} s"
    results: dict[str, Any] = {
        "store": (Check(ok=False, detail=unanswered), None),
        "scheduler": (SchedulerCheck(ok=False, running=None, leader=None,
                                     detail=f"status(): {unanswered}"), None),
    }

    async def in_thread(key: str, work: Callable[[], Any]) -> None:
        # An abandoned thread ends on its own.
        with anyio.move_on_after(timeout):
            results[key] = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)

    async with anyio.create_task_group() as group:
        group.start_soon(in_thread, "store", lambda: _store_checks(engine, config))
        group.start_soon(in_thread, "scheduler", lambda: _scheduler_check(scheduler))
    (database, stored), (sched, replica) = results["store"], results["scheduler"]
    if stored is None:
        freshness = FreshnessCheck(
            ok=False, models={}, detail="unknown: the store cannot be reached"
            if database.detail != unanswered else "unknown: the store did not answer")
    else:
        now, last, leases = stored
        freshness = _freshness(config, last, leases, replica, now, up=now - started_at)
    ok = database.ok and sched.ok and freshness.ok
    return Readiness(status="ready" if ok else "not_ready",
                     checks=ReadyChecks(database=database, scheduler=sched,
                                        freshness=freshness))


_Stored = tuple[datetime, dict[str, datetime], dict[str, LeaseRow] | None]


def _store_checks(engine: Engine, config: Config) -> tuple[Check, _Stored | None]:
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        ping(engine)
        database = Check(ok=True, detail=f"SELECT 1 answered in "
                         f"{(time.perf_counter() - started) * 1000:.1f} ms")
        last = last_successes(engine, list(config.models), SUCCESSFUL_STATUSES)
    except StoreError as exc:
        _log.warning("mqm api: readiness: %s", first_line(exc))
        return Check(ok=False, detail=f"cannot reach the store: {first_line(exc)}"), None
    try:
        leases: dict[str, LeaseRow] | None = lease_rows(engine)
    except StoreError as exc:  # who runs which model is unknown: every model counts
        _log.warning("mqm api: readiness: the leases: %s", first_line(exc))
        leases = None
    return database, (now, last, leases)


def _freshness(config: Config, last: dict[str, datetime],
               leases: dict[str, LeaseRow] | None, replica: str | None, now: datetime, *,
               up: timedelta) -> FreshnessCheck:
    """Each model's last success against its limit; ``up``: how long the service runs.
    A model counts unless another replica holds its lease live (see the module doc)."""
    models = {}
    for name, model_cfg in config.models.items():
        max_age = config.serve.ready_max_age or 3 * model_cfg.window
        at = last.get(name)
        if at is None:
            ok = up <= max_age
            detail = (f"never run; tolerated while the service is younger than "
                      f"{_span(max_age)} (up {_span(up)})")
            age = None
        else:
            age = now - at
            ok = age <= max_age
            detail = f"last successful run {_span(age)} ago (limit {_span(max_age)})"
        row = None if leases is None else leases.get(name)
        lease = None if row is None else ModelLease(
            holder=row.holder, expires_at=row.expires_at, lapsed=row.lapsed,
            here=replica is not None and row.holder == replica and not row.lapsed)
        counted = lease is None or lease.lapsed or lease.here
        if lease is not None and row is not None:
            if lease.here:
                detail += "; run by this replica"
            elif not lease.lapsed:
                detail += (f"; run by replica {row.holder} (lease until "
                           f"{row.expires_at.isoformat()}): its health, not this one's")
            else:
                detail += (f"; its lease lapsed at {row.expires_at.isoformat()}: no "
                           "replica runs its checks now")
        models[name] = ModelFreshness(
            ok=ok, detail=detail, last_success_at=at, max_age_seconds=max_age.total_seconds(),
            age_seconds=None if age is None else age.total_seconds(), counted=counted,
            lease=lease)
    stale = [m for m, f in models.items() if not f.ok and f.counted]
    elsewhere = [m for m, f in models.items() if not f.ok and not f.counted]
    detail = f"stale: {', '.join(stale)}" if stale else "all fresh"
    if elsewhere:
        detail += (f" (stale but run by another replica, not counted here: "
                   f"{', '.join(elsewhere)})") if stale else \
            f" that this replica answers for; stale on another replica: {', '.join(elsewhere)}"
    return FreshnessCheck(ok=not stale, models=models, detail=detail)


def _scheduler_check(scheduler: SchedulerStatus | None) -> tuple[SchedulerCheck, str | None]:
    """The scheduler's check, and this replica's name in the leases (None: unknown)."""
    if scheduler is None:
        return SchedulerCheck(ok=True, running=None, leader=None,
                              detail="no scheduler in this process (API only)"), None
    try:
        status = scheduler.status()
        running, leader = bool(status["running"]), bool(status["leader"])
        replica = status.get("replica")
        models = status.get("models") or {}
        led = sorted(m for m, s in models.items() if isinstance(s, dict) and s.get("leads"))
    except Exception as exc:  # a broken scheduler is a failed check, not a 500
        return SchedulerCheck(ok=False, running=None, leader=None,
                              detail=f"status() failed: {exc!r}"), None
    if not running:
        detail = "not running"
    elif leader:
        detail = "running, leader: checks run in this process"
        if models and len(led) < len(models):
            detail += f" for {', '.join(led)} ({len(led)} of {len(models)} models)"
    else:
        detail = "running, standby: other replicas run the checks"
    return (SchedulerCheck(ok=running, running=running, leader=leader, detail=detail),
            replica if isinstance(replica, str) else None)


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if abs(seconds) < 120:
        return f"{seconds} s"
    if abs(seconds) < 7200:
        return f"{seconds // 60} min"
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
