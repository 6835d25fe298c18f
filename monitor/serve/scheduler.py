"""The scheduler of ``mqm serve``: one check job per model, catch-up from a watermark,
rechecks of windows waiting for labels, and one active replica per database.

How it behaves (the README's "Running the service" says the same for users):

* **Jobs.** Per model, a *check* job on the model's ``schedule``: ``every`` is an
  interval, ``cron`` a five-field cron line in UTC (standard weekday numbers, 0 or 7 is
  Sunday), and by default once per window, at each aligned window end plus
  ``delay``. Plus a *recheck* job every ``recheck_every`` that re-judges windows whose
  accuracy waited for labels (``monitor.run.check.recompute_immature``).
* **Watermark and catch-up.** A check job does not check "the current window"; it
  checks every aligned window after the model's watermark whose end + ``delay`` has
  passed, oldest first, one run each. The watermark (``scheduler_state.watermark``,
  the end of the last window whose scheduled run is stored) moves in the transaction
  that stores the run, by compare-and-set on its previous value: a crash or a kill
  before the commit leaves neither the run nor the move, after it both; and a second
  writer for the same window (a replica that has not yet noticed it lost the lead) is
  rolled back. So after downtime the service catches up window by window, none
  skipped, none counted twice. A run with status ``error`` (a check that could not
  run) is stored and so moves the watermark; the fallback policy ignores it. A
  failure that stores nothing (contract unreadable, database down) stops the tick at
  that window; it is retried after ``error_retry`` seconds and at every later tick,
  and ``last_error`` says why.
* **Where a model starts.** With no watermark yet: after the newest stored ``check``
  run of the model (so ``mqm check --at T`` or ``mqm backfill`` before the first start
  sets the starting point), else at the window holding the oldest log; a model with
  no logs yet waits for its first log.
* **No overlap.** Check, catch-up and recheck jobs of one model share one lock, and
  each job has ``max_instances=1``; a run that is late is coalesced into one
  (``coalesce=True``) and never dropped (no misfire grace limit): the catch-up covers
  whatever it missed.
* **One active replica.** On PostgreSQL the replica holding the session-level
  advisory lock ``pg_try_advisory_lock(advisory_key())`` (``monitor.serve.leader``) on a
  dedicated connection
  runs the jobs; the others keep their jobs paused, serve the API, and retry every
  ``retry_interval`` seconds. When the leader's session ends (process killed, host or
  network gone: the lock session asks the server for TCP keepalives so that a dead
  peer is noticed within about half a minute) PostgreSQL releases the lock and a
  follower takes over, first catching up. A leader whose lock connection fails
  steps down and waits two retry intervals before competing again. The lock needs a
  real session: not through a transaction-pooling PgBouncer. On SQLite (a single
  file, one process) the scheduler is always the leader.
* **Stopping.** ``shutdown()`` stops taking new work: a catch-up stops after the
  window being checked, whose run is one transaction (finished, or abandoned with
  nothing written); then the lock is released.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitor.config import Config, ModelConfig
from monitor.errors import MonitorError, WatermarkMoved, first_line
from monitor.run.check import compact_logs, recompute_immature, run_check
from monitor.serve.leader import AdvisoryLock, AlwaysLeader, Leadership
from monitor.serve.triggers import cron_trigger, trigger_for
from monitor.store.db import Engine
from monitor.store.watermarks import (
    last_checked_window_end,
    read_watermark,
    record_error,
    scheduler_rows,
    start_watermark,
)
from monitor.times import floor_window, iso_z, next_window_end

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from monitor.results import CheckRun
    from monitor.store.compaction import CompactResult

__all__ = [
    "MonitorScheduler",
    "cron_trigger",
    "next_window_end",
    "read_watermark",
    "trigger_for",
]

Clock = Callable[[], datetime]
_log = logging.getLogger("mqm.scheduler")


# --- the scheduler -----------------------------------------------------------------


class MonitorScheduler:
    """APScheduler 3.x wiring of the check and recheck jobs, with leader election.

    ``clock`` (default: UTC wall time) decides which windows are due and is the
    ``now`` of each run; tests inject one. ``retry_interval``: seconds between a
    follower's attempts to take the lead and between the leader's lock checks.
    ``error_retry``: seconds after which a tick that failed is tried again (besides
    its next scheduled time). ``leadership`` replaces the election (default: an
    advisory lock on PostgreSQL, always leader elsewhere).
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock | None = None,
        retry_interval: float = 5.0,
        error_retry: float = 300.0,
        leadership: Leadership | None = None,
        max_workers: int | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._retry_interval = retry_interval
        self._error_retry = error_retry
        if leadership is None:
            leadership = (AdvisoryLock(engine.url) if engine.dialect.name == "postgresql"
                          else AlwaysLeader())
        self._leadership = leadership
        self._max_workers = max_workers or min(32, max(4, 2 * len(config.models)))
        # Resolved now so that a bad cron line fails at start-up, naming its model.
        self._triggers = {name: trigger_for(name, cfg) for name, cfg in config.models.items()}
        self._locks = {name: threading.Lock() for name in config.models}
        # Compaction runs beside checks (it only writes log blocks), one at a time.
        self._compacting = {name: threading.Lock() for name in config.models}
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()  # start() and shutdown() one at a time
        self._stopped = False
        self._state_lock = threading.Lock()  # guards _leader and job pausing/resuming
        self._leader = False
        self._started = False
        self._aps: BackgroundScheduler | None = None
        self._elector: threading.Thread | None = None
        self._busy: set[str] = set()
        # What this replica last saw, served by status() when the store cannot answer.
        self._seen: dict[str, dict[str, Any]] = {name: {} for name in config.models}

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the jobs (paused until this replica leads) and the election thread.

        Does nothing once ``shutdown()`` was called (a SIGTERM during start-up).
        """
        with self._lifecycle:
            if self._started:
                raise MonitorError("the scheduler is already started")
            if not self._stop.is_set():
                self._start()

    def _start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        aps = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(self._max_workers)},
            # A late run is merged into one and run however late: the catch-up makes
            # any late run complete, so dropping one would only delay work.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for name, cfg in self._config.models.items():
            # next_run_time=None adds the job paused; it resumes when this replica leads.
            aps.add_job(self.tick, self._triggers[name], args=[name], id=f"check:{name}",
                        name=f"check {name}", next_run_time=None)
            aps.add_job(self.recheck, "interval", args=[name], id=f"recheck:{name}",
                        name=f"recheck {name}", next_run_time=None,
                        seconds=cfg.schedule.recheck_every.total_seconds(), timezone=UTC)
            if cfg.source.kind == "builtin" and cfg.schedule.compact_every is not None:
                aps.add_job(self.compact, "interval", args=[name], id=f"compact:{name}",
                            name=f"compact {name}", next_run_time=None,
                            seconds=cfg.schedule.compact_every.total_seconds(), timezone=UTC)
        aps.start()
        self._aps = aps
        self._started = True
        self._elect_once()  # so that start() returns knowing whether it leads
        self._elector = threading.Thread(target=self._elect_loop, name="mqm-leader",
                                         daemon=True)
        self._elector.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking new work; with ``wait``, let running checks finish; give the lead up.

        A catch-up stops after the window it is checking. Without ``wait`` running
        checks go on in their threads; each is one transaction, so a process that
        exits meanwhile leaves nothing partial behind.
        """
        self._stop.set()  # first, so that a start() in progress or a running tick sees it
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
            self._shutdown(wait)

    def _shutdown(self, wait: bool) -> None:
        if self._elector is not None:
            self._elector.join(timeout=max(10.0, 2 * self._retry_interval))
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=wait)
        with self._state_lock:
            self._leader = False
            # Released after the jobs ended, so that no other replica takes over while
            # this one still writes (the watermark's compare-and-set guards it anyway).
            self._leadership.release()
        _log.info("mqm: scheduler stopped")

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set()

    @property
    def leader(self) -> bool:
        return self.running and self._leader

    # -- leader election ------------------------------------------------------------

    def _elect_once(self) -> None:
        with self._state_lock:
            if self._stop.is_set():
                return
            if self._leader:
                if self._leadership.alive():
                    return
                self._step_down()
                return
            if self._leadership.try_acquire():
                self._become_leader()

    def _elect_loop(self) -> None:
        backoff = 0
        while not self._stop.wait(self._retry_interval):
            if backoff > 0:
                backoff -= 1
                continue
            was_leader = self._leader
            try:
                self._elect_once()
            except Exception:  # the election must go on whatever happens
                _log.exception("mqm: leader election failed")
            if was_leader and not self._leader:
                # Give a healthy follower two intervals to take over first.
                backoff = 2

    def _become_leader(self) -> None:
        self._leader = True
        _log.info("mqm: this replica now runs the scheduled checks")
        assert self._aps is not None
        from apscheduler.jobstores.base import JobLookupError

        for name in self._config.models:
            self._aps.resume_job(f"check:{name}")
            self._aps.resume_job(f"recheck:{name}")
            with contextlib.suppress(JobLookupError):  # only models with log blocks
                self._aps.resume_job(f"compact:{name}")
            # Catch up at once: the previous leader may have stopped long ago.
            self._soon(name, 0.0)

    def _step_down(self) -> None:
        self._leader = False
        _log.warning("mqm: lost the scheduler lock; this replica serves the API only")
        from apscheduler.jobstores.base import JobLookupError

        assert self._aps is not None
        for name in self._config.models:
            for job in (f"check:{name}", f"recheck:{name}", f"catchup:{name}",
                        f"compact:{name}"):
                with contextlib.suppress(JobLookupError):  # a one-off catch-up that ran
                    self._aps.pause_job(job)

    def _soon(self, model: str, seconds: float) -> None:
        """A one-off catch-up of ``model`` in ``seconds`` (it queues behind the model lock)."""
        if self._aps is None or self._stop.is_set():
            return
        self._aps.add_job(self.tick, "date", args=[model], id=f"catchup:{model}",
                          name=f"catch up {model}", replace_existing=True,
                          run_date=datetime.now(UTC) + timedelta(seconds=seconds))

    # -- jobs -----------------------------------------------------------------------

    def _may_continue(self) -> bool:
        # Called directly (tests, tools) on a scheduler that was never started, the
        # work runs whoever leads: the watermark's compare-and-set keeps it exactly once.
        return not self._stop.is_set() and (self._leader or not self._started)

    def _acquire(self, model: str) -> threading.Lock | None:
        """The model's lock, waiting for a running job of the model; None when stopping."""
        lock = self._locks[model]
        while not lock.acquire(timeout=0.2):
            if self._stop.is_set():
                return None
        return lock

    def tick(self, model: str) -> list[CheckRun]:
        """The check job: catch the model up, recording (not raising) a failure.

        Does nothing on a replica that does not lead or is stopping. A failure is
        logged, kept as ``last_error`` and retried after ``error_retry`` seconds.
        """
        if not self.leader:
            return []
        try:
            return self.catch_up(model)
        except Exception as exc:
            self._record_error(model, exc)
            self._soon(model, self._error_retry)
            return []

    def catch_up(
        self, model: str, now: datetime | None = None, *, limit: int | None = None
    ) -> list[CheckRun]:
        """Check each due window after the watermark, oldest first; return the runs.

        A window is due when its end + ``schedule.delay`` is not after ``now``
        (default: the clock, read again before each window, so a long catch-up also
        takes the windows that fall due meanwhile). Stops after ``limit`` runs, when
        the scheduler stops, or when this replica loses the lead; raises what a run
        raises (the run and the watermark move are then both rolled back).
        """
        model_cfg = self._config.model(model)
        lock = self._acquire(model)
        if lock is None:
            return []
        runs: list[CheckRun] = []
        self._busy.add(model)
        try:
            while (limit is None or len(runs) < limit) and self._may_continue():
                current = now or self._clock()
                watermark = self._watermark(model, model_cfg)
                if watermark is None:
                    break  # no logs yet
                end = next_window_end(watermark, model_cfg.window)
                if end + model_cfg.schedule.delay > current:
                    break
                if not runs:  # the window's last logs into blocks first: a faster read
                    self.compact(model, wait=True)
                try:
                    run = run_check(self._engine, self._config, model, at=end, now=current,
                                    expect_watermark=watermark)
                except WatermarkMoved as exc:
                    _log.info("mqm: %s", exc)
                    continue  # someone else checked it: read the watermark again
                assert run is not None  # a window was given
                runs.append(run)
                self._seen[model].update(watermark=end, last_run_at=self._clock(),
                                         last_error=None, last_error_at=None)
                _log.info("mqm: %s window %s .. %s: %s (%d rows)", model,
                          iso_z(run.start), iso_z(run.end), run.status, run.rows)
        finally:
            self._busy.discard(model)
            lock.release()
        return runs

    def compact(self, model: str, *, wait: bool = False) -> CompactResult | None:
        """The compaction job: copy new logs and labels into log blocks, so that checks
        read them fast. Logs (does not raise) a failure: reads then use the rows.

        Does nothing on a replica that does not lead, or (unless ``wait``) while the
        model is being compacted already.
        """
        if not self._may_continue():
            return None
        lock = self._compacting[model]
        if not lock.acquire(blocking=wait):
            return None
        try:
            result = compact_logs(self._engine, self._config, model)
            self._seen[model].update(last_compact_at=self._clock(), last_compact_error=None)
            if result is not None and result.rows:
                _log.info("mqm: %s: %d new log rows compacted in %.2f s", model,
                          result.rows, result.seconds)
            return result
        except Exception as exc:
            self._seen[model].update(last_compact_error=_describe(exc))
            _log.warning("mqm: compacting the logs of %s failed: %s", model, _describe(exc),
                         exc_info=not isinstance(exc, MonitorError))
            return None
        finally:
            lock.release()

    def recheck(self, model: str) -> list[CheckRun]:
        """The recheck job: re-judge windows whose accuracy waited for labels.

        Runs under the model's lock (never beside a check of the model); does nothing
        on a replica that does not lead. A failure is logged and retried next time.
        """
        if not self.leader:
            return []
        lock = self._acquire(model)
        if lock is None:
            return []
        self._busy.add(model)
        try:
            runs = recompute_immature(self._engine, self._config, model, now=self._clock())
            self._seen[model].update(last_recheck_at=self._clock(), last_recheck_error=None)
            return runs
        except Exception as exc:
            self._seen[model].update(last_recheck_error=_describe(exc))
            _log.warning("mqm: recheck of %s failed: %s", model, _describe(exc),
                         exc_info=not isinstance(exc, MonitorError))
            return []
        finally:
            self._busy.discard(model)
            lock.release()

    # -- the watermark ----------------------------------------------------------------

    def _watermark(self, model: str, model_cfg: ModelConfig) -> datetime | None:
        stored = read_watermark(self._engine, model)
        if stored is not None:
            return stored
        start = self._starting_point(model, model_cfg)
        if start is None:
            return None
        start_watermark(self._engine, model, start, self._clock())
        _log.info("mqm: %s: checks start after %s", model, iso_z(start))
        return read_watermark(self._engine, model)

    def _starting_point(self, model: str, model_cfg: ModelConfig) -> datetime | None:
        """After the newest stored check run, else at the window of the oldest log."""
        last = last_checked_window_end(self._engine, model)
        if last is not None:
            return last
        from monitor.run.model import resolve

        oldest, _ = resolve(self._engine, self._config, model).source.time_range()
        return None if oldest is None else floor_window(oldest, model_cfg.window)

    def _record_error(self, model: str, exc: BaseException) -> None:
        text, now = _describe(exc), self._clock()
        _log.warning("mqm: check of %s stopped: %s (retrying in %g s)", model, text,
                     self._error_retry, exc_info=not isinstance(exc, MonitorError))
        with contextlib.suppress(Exception):  # the store may be what failed; the log has it
            record_error(self._engine, model, text, now)
        # After the store: a status() in between must not show the error from memory and
        # then lose it to a store row written a moment later.
        self._seen[model].update(last_error=text, last_error_at=now)

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What /readyz and operators need; never raises.

        ``running``: the jobs are started and not stopping; ``leader``: this replica
        runs the checks. Per model: ``watermark`` (end of the last window checked),
        ``last_run_at``, ``last_error`` and ``last_error_at`` (from the store, shared
        by all replicas; this replica's last view when the store does not answer),
        ``next_run_at`` (this replica's next check; null on a follower),
        ``last_recheck_at``, ``last_recheck_error``, ``last_compact_at``,
        ``last_compact_error`` and ``busy`` (this replica).
        """
        stored: dict[str, dict[str, Any]] = {}
        store_error = None
        try:
            stored = scheduler_rows(self._engine)
        except Exception as exc:
            store_error = first_line(exc)
        models = {}
        for name in self._config.models:
            seen = self._seen[name]
            if store_error is None:
                row = stored.get(name, {})
                seen.update({k: row.get(k) for k in ("watermark", "last_run_at",
                                                     "last_error", "last_error_at")})
            models[name] = {
                "watermark": iso_z(seen.get("watermark")),
                "last_run_at": iso_z(seen.get("last_run_at")),
                "next_run_at": iso_z(self._next_run(name)),
                "last_error": seen.get("last_error"),
                "last_error_at": iso_z(seen.get("last_error_at")),
                "last_recheck_at": iso_z(seen.get("last_recheck_at")),
                "last_recheck_error": seen.get("last_recheck_error"),
                "last_compact_at": iso_z(seen.get("last_compact_at")),
                "last_compact_error": seen.get("last_compact_error"),
                "busy": name in self._busy,
            }
        return {"running": self.running, "leader": self.leader, "store_error": store_error,
                "models": models}

    def _next_run(self, model: str) -> datetime | None:
        if self._aps is None or not self.leader:
            return None
        times = [job.next_run_time for job_id in (f"check:{model}", f"catchup:{model}")
                 if (job := self._aps.get_job(job_id)) is not None and job.next_run_time]
        return min(times) if times else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MonitorError):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"

