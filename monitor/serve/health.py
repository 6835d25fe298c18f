"""Readiness of ``mqm serve`` (``GET /readyz``): the database answers, the scheduler
runs, and every model's last successful check run is recent enough.

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
    Readiness,
    ReadyChecks,
    SchedulerCheck,
)
from monitor.store.db import Engine, ping
from monitor.store.reads import StoreError, last_successes

__all__ = ["SchedulerStatus", "readiness"]

_log = logging.getLogger("mqm.api")


class SchedulerStatus(Protocol):
    """What the API needs of the scheduler (``monitor.serve.scheduler``).

    ``status()`` returns at least ``{"running": bool, "leader": bool}``; a replica that
    runs but is not the leader is healthy (another replica holds the lock). Whatever it
    raises makes the readiness check fail.
    """

    def status(self) -> dict[str, Any]: ...


async def readiness(engine: Engine, config: Config, scheduler: SchedulerStatus | None, *,
                    started_at: datetime, timeout: float) -> Readiness:
    """Every check, each given at most ``timeout`` seconds. ``started_at``: when the
    service started (a model that never ran is forgiven until it is old enough)."""
    unanswered = f"no answer within {timeout:g} s"
    results: dict[str, Any] = {
        "store": (Check(ok=False, detail=unanswered),
                  FreshnessCheck(ok=False, detail="unknown: the store did not answer",
                                 models={})),
        "scheduler": SchedulerCheck(ok=False, running=None, leader=None,
                                    detail=f"status(): {unanswered}"),
    }

    async def in_thread(key: str, work: Callable[[], Any]) -> None:
        # An abandoned thread ends on its own.
        with anyio.move_on_after(timeout):
            results[key] = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)

    async with anyio.create_task_group() as group:
        group.start_soon(in_thread, "store", lambda: _store_checks(engine, config, started_at))
        group.start_soon(in_thread, "scheduler", lambda: _scheduler_check(scheduler))
    (database, freshness), sched = results["store"], results["scheduler"]
    ok = database.ok and sched.ok and freshness.ok
    return Readiness(status="ready" if ok else "not_ready",
                     checks=ReadyChecks(database=database, scheduler=sched,
                                        freshness=freshness))


def _store_checks(engine: Engine, config: Config,
                  started_at: datetime) -> tuple[Check, FreshnessCheck]:
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        ping(engine)
        database = Check(ok=True, detail=f"SELECT 1 answered in "
                         f"{(time.perf_counter() - started) * 1000:.1f} ms")
        last = last_successes(engine, list(config.models), SUCCESSFUL_STATUSES)
    except StoreError as exc:
        _log.warning("mqm api: readiness: %s", first_line(exc))
        return (Check(ok=False, detail=f"cannot reach the store: {first_line(exc)}"),
                FreshnessCheck(ok=False, detail="unknown: the store cannot be reached",
                               models={}))
    return database, _freshness(config, last, now, up=now - started_at)


def _freshness(config: Config, last: dict[str, datetime], now: datetime, *,
               up: timedelta) -> FreshnessCheck:
    """Each model's last success against its limit; ``up``: how long the service runs."""
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
        models[name] = ModelFreshness(
            ok=ok, detail=detail, last_success_at=at, max_age_seconds=max_age.total_seconds(),
            age_seconds=None if age is None else age.total_seconds())
    stale = [m for m, f in models.items() if not f.ok]
    return FreshnessCheck(ok=not stale, models=models,
                          detail=f"stale: {', '.join(stale)}" if stale else "all fresh")


def _scheduler_check(scheduler: SchedulerStatus | None) -> SchedulerCheck:
    if scheduler is None:
        return SchedulerCheck(ok=True, running=None, leader=None,
                              detail="no scheduler in this process (API only)")
    try:
        status = scheduler.status()
        running, leader = bool(status["running"]), bool(status["leader"])
    except Exception as exc:  # a broken scheduler is a failed check, not a 500
        return SchedulerCheck(ok=False, running=None, leader=None,
                              detail=f"status() failed: {exc!r}")
    if not running:
        detail = "not running"
    elif leader:
        detail = "running, leader: checks run in this process"
    else:
        detail = "running, standby: another replica holds the lock"
    return SchedulerCheck(ok=running, running=running, leader=leader, detail=detail)


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if abs(seconds) < 120:
        return f"{seconds} s"
    if abs(seconds) < 7200:
        return f"{seconds // 60} min"
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
