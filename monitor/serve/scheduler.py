"""The scheduler of ``mqm serve``: one check job per model, catch-up from a watermark,
rechecks of windows waiting for labels, and the models shared by the replicas.

How it behaves (the README's "Running the service" says the same for users):

* **Jobs.** Per model, a *check* job on the model's ``schedule``: ``every`` is an
  interval, ``cron`` a five-field cron line in UTC (standard weekday numbers, 0 or 7 is
  Sunday), and by default once per window, at each aligned window end plus
  ``delay``. Plus a *recheck* job every ``recheck_every`` that re-judges windows whose
  accuracy waited for labels (``monitor.run.check.recompute_immature``). Plus, for a
  model with a ``retention``, a *retention* job every ``schedule.retention_every`` that
  deletes its logs, labels and log blocks older than that (``monitor.run.retention``),
  in short batches that each check the model's lease.
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
* **Rechecks.** A window whose latest run judged accuracy on immature labels is run
  again only when labels of it arrived since (or it has since become mature by age),
  under the same guards as a check: the run it recomputes must still be the latest of
  the window and be recomputed by no one else, and the lease must still be held.
* **No overlap.** Check, catch-up and recheck jobs of one model share one lock, and
  each job has ``max_instances=1``; a run that is late is coalesced into one
  (``coalesce=True``) and never dropped (no misfire grace limit): the catch-up covers
  whatever it missed.
* **Replicas share the models (PostgreSQL).** Each model's work (checks, rechecks,
  compaction) runs on the replica holding the model's lease (``monitor.serve.leader``):
  a row per model with a holder, an expiry and a fencing token, renewed every
  ``serve.lease_renew`` seconds and lapsing ``serve.lease`` seconds after its last
  renewal. At each round a replica renews its leases, takes over lapsed ones up to its
  fair share (the models divided by the live replicas, rounded up) and gives up the
  models beyond it (after the run in flight), so N replicas share the models. A stalled
  replica (SIGSTOP, a GC pause, a hung driver call) keeps its database session but not
  its leases: after ``serve.lease`` another replica takes its models over and catches
  up. A killed replica's session ends and frees its advisory lock, so the others free
  its leases at their next round. Every write under a lease (a check's watermark move,
  a recheck) checks the lease's token in its own transaction, so a replica that
  resumes after losing a model writes nothing for it, and steps down at its next
  round. A replica whose lease session fails gives its models up and waits two rounds
  before competing again. On SQLite (a single file, one process) the scheduler runs
  every model.
* **Stopping.** ``shutdown()`` stops taking new work: a catch-up stops after the
  window being checked, whose run is one transaction (finished, or abandoned with
  nothing written); then the leases are released, for the other replicas to take.
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
from monitor.run.retention import apply_retention
from monitor.serve.leader import AlwaysLeader, Leadership, Lease, ModelLeases
from monitor.serve.triggers import cron_trigger, trigger_for
from monitor.store.db import Engine
from monitor.store.locks import Fence, LeaseLost, lease_rows
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
    from monitor.store.retention import RetentionResult

__all__ = [
    "MonitorScheduler",
    "cron_trigger",
    "next_window_end",
    "read_watermark",
    "trigger_for",
]

Clock = Callable[[], datetime]
_log = logging.getLogger("mqm.scheduler")
_JOBS = ("check", "recheck", "catchup", "compact", "retention")


# --- the scheduler -----------------------------------------------------------------


class MonitorScheduler:
    """APScheduler 3.x wiring of the check and recheck jobs, with per-model leases.

    ``clock`` (default: UTC wall time) decides which windows are due and is the
    ``now`` of each run; tests inject one. ``retry_interval``: seconds between two
    rounds of the election (renewing this replica's leases, taking lapsed ones over);
    default ``serve.lease_renew``. ``lease``: seconds a lease lasts unless renewed;
    default ``serve.lease``. ``error_retry``: seconds after which a tick that failed is
    tried again (besides its next scheduled time). ``leadership`` replaces the election
    (default: model leases on PostgreSQL, every model elsewhere).
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock | None = None,
        retry_interval: float | None = None,
        lease: float | None = None,
        error_retry: float = 300.0,
        leadership: Leadership | None = None,
        max_workers: int | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._retry_interval = (config.serve.lease_renew.total_seconds()
                                if retry_interval is None else retry_interval)
        self._lease_seconds = config.serve.lease.total_seconds() if lease is None else lease
        self._error_retry = error_retry
        if leadership is None:
            leadership = (ModelLeases(engine.url, ttl=self._lease_seconds)
                          if engine.dialect.name == "postgresql" else AlwaysLeader())
        self._leadership = leadership
        self._max_workers = max_workers or min(32, max(4, 2 * len(config.models)))
        # Resolved now so that a bad cron line fails at start-up, naming its model.
        self._triggers = {name: trigger_for(name, cfg) for name, cfg in config.models.items()}
        self._locks = {name: threading.Lock() for name in config.models}
        # Compaction runs beside checks (it only writes log blocks), one at a time.
        self._compacting = {name: threading.Lock() for name in config.models}
        # Retention too: it deletes only windows no check or recheck reads any more.
        self._retaining = {name: threading.Lock() for name in config.models}
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()  # start() and shutdown() one at a time
        self._stopped = False
        self._state_lock = threading.Lock()  # guards _leases, _yielding and job pausing
        self._leases: dict[str, Lease] = {}  # the models this replica runs
        self._yielding: set[str] = set()  # leases given up once their job ends
        self._share = 0
        self._replicas = 0
        self._started = False
        self._aps: BackgroundScheduler | None = None
        self._elector: threading.Thread | None = None
        self._busy: set[str] = set()
        # What this replica last saw, served by status() when the store cannot answer.
        self._seen: dict[str, dict[str, Any]] = {name: {} for name in config.models}

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the jobs (paused until this replica holds their model) and the election.

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
            if cfg.retention_period is not None:
                aps.add_job(self.retain, "interval", args=[name], id=f"retention:{name}",
                            name=f"retention {name}", next_run_time=None,
                            seconds=cfg.schedule.retention_every.total_seconds(),
                            timezone=UTC)
        aps.start()
        self._aps = aps
        self._started = True
        self._elect_once()  # so that start() returns knowing which models it runs
        self._elector = threading.Thread(target=self._elect_loop, name="mqm-leader",
                                         daemon=True)
        self._elector.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking new work; with ``wait``, let running checks finish; give the leases up.

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
            # Emptied first: remove_all_jobs waits on the job store lock for a due-job pass
            # in progress, which would otherwise find the scheduler stopped under it and
            # raise in APScheduler's thread when it removes a one-off catch-up it just ran.
            self._aps.remove_all_jobs()
            self._aps.shutdown(wait=wait)
        with self._state_lock:
            self._leases = {}
            self._yielding.clear()
            # Released after the jobs ended, so that no other replica takes over while
            # this one still writes (the fencing token guards it anyway).
            self._leadership.release_all()
        _log.info("mqm: scheduler stopped")

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set()

    @property
    def leader(self) -> bool:
        """Whether this replica runs the checks of at least one model."""
        return self.running and any(self._lease(m) is not None for m in self._config.models)

    def leads(self, model: str) -> bool:
        """Whether this replica runs ``model``'s checks now."""
        return self.running and self._lease(model) is not None

    @property
    def replica(self) -> str:
        """This replica's name in the store's leases."""
        return self._leadership.replica

    def _lease(self, model: str) -> Lease | None:
        """The lease ``model``'s work may start under now (None: not this replica's)."""
        lease = self._leases.get(model)
        if lease is None or model in self._yielding or not lease.valid():
            return None
        return lease

    def _fence(self, model: str) -> Fence | None:
        lease = self._lease(model)
        return None if lease is None else lease.fence(self.replica, self._lease_seconds)

    # -- leases -----------------------------------------------------------------------

    def _elect_once(self) -> bool:
        """One round of the election; False when the store could not be asked."""
        with self._state_lock:
            if self._stop.is_set():
                return True
            election = self._leadership.elect(list(self._config.models))
            if self._stop.is_set():
                return True  # shutdown() releases what this round took
            held, before = election.leases, self._leases
            for model in before.keys() - held.keys():
                self._pause(model)
                self._yielding.discard(model)
                _log.warning("mqm: %s: lost its lease; another replica runs its checks",
                             model)
            self._leases = dict(held)
            for model in held.keys() - before.keys():
                _log.info("mqm: %s: this replica now runs its checks (lease token %s)",
                          model, held[model].token)
                self._resume(model)
            for model in held.keys() & before.keys():
                if not before[model].valid():
                    # Renewed after it lapsed here (this process stalled, and nobody took
                    # the model meanwhile): a catch-up it cut short goes on now.
                    self._soon(model, 0.0)
            self._share, self._replicas = election.share, election.replicas
            self._rebalance()
            return not election.failed

    def _rebalance(self) -> None:
        """Give up the models beyond this replica's share: their jobs stop taking new
        windows at once, and each lease is released once its model's job has ended."""
        self._release_yielded()
        surplus = len(self._leases) - len(self._yielding) - self._share
        if surplus <= 0:
            return
        # Idle models first; among those the last in name order, for a stable choice.
        keep = sorted((m for m in self._leases if m not in self._yielding),
                      key=lambda m: (m not in self._busy, m))
        for model in keep[len(keep) - surplus:]:
            self._yielding.add(model)
            self._pause(model)
        self._release_yielded()

    def _release_yielded(self) -> None:
        for model in sorted(self._yielding):
            if model in self._busy:
                continue  # its run in flight finishes first
            self._yielding.discard(model)
            lease = self._leases.pop(model, None)
            if lease is not None:
                self._leadership.release(lease)
                _log.info("mqm: %s: given up for another replica (%d replicas share the "
                          "models)", model, self._replicas)

    def _elect_loop(self) -> None:
        backoff = 0
        while not self._stop.wait(self._retry_interval):
            if backoff > 0:
                backoff -= 1
                continue
            had = bool(self._leases)
            try:
                ok = self._elect_once()
            except Exception:  # the election must go on whatever happens
                _log.exception("mqm: leader election failed")
                ok = False
            if not ok and had:
                # Give a healthy replica two rounds to take the models over first.
                backoff = 2

    def _resume(self, model: str) -> None:
        assert self._aps is not None
        from apscheduler.jobstores.base import JobLookupError

        self._aps.resume_job(f"check:{model}")
        self._aps.resume_job(f"recheck:{model}")
        with contextlib.suppress(JobLookupError):  # only models with log blocks
            self._aps.resume_job(f"compact:{model}")
        with contextlib.suppress(JobLookupError):  # only models with a retention
            job = self._aps.resume_job(f"retention:{model}")
            # Within a minute of taking the model, not only after a whole interval: a
            # replica restarted more often than that would never get to it.
            soon = datetime.now(UTC) + timedelta(seconds=60)
            if job is not None and job.next_run_time is not None and job.next_run_time > soon:
                self._aps.modify_job(job.id, next_run_time=soon)
        # Catch up at once: the previous holder may have stopped long ago.
        self._soon(model, 0.0)

    def _pause(self, model: str) -> None:
        assert self._aps is not None
        from apscheduler.jobstores.base import JobLookupError

        for kind in _JOBS:
            with contextlib.suppress(JobLookupError):  # a one-off catch-up that ran
                self._aps.pause_job(f"{kind}:{model}")

    def _soon(self, model: str, seconds: float) -> None:
        """A one-off catch-up of ``model`` in ``seconds`` (it queues behind the model lock)."""
        if self._aps is None or self._stop.is_set():
            return
        self._aps.add_job(self.tick, "date", args=[model], id=f"catchup:{model}",
                          name=f"catch up {model}", replace_existing=True,
                          run_date=datetime.now(UTC) + timedelta(seconds=seconds))

    # -- jobs -----------------------------------------------------------------------

    def _may_continue(self, model: str) -> bool:
        # Called directly (tests, tools) on a scheduler that was never started, the
        # work runs whoever leads: the watermark's compare-and-set keeps it exactly once.
        if self._stop.is_set():
            return False
        return not self._started or self._lease(model) is not None

    def _acquire(self, model: str) -> threading.Lock | None:
        """The model's lock, waiting for a running job of the model; None when stopping."""
        lock = self._locks[model]
        while not lock.acquire(timeout=0.2):
            if self._stop.is_set():
                return None
        return lock

    def tick(self, model: str) -> list[CheckRun]:
        """The check job: catch the model up, recording (not raising) a failure.

        Does nothing on a replica that does not hold the model or is stopping. A failure
        is logged, kept as ``last_error`` and retried after ``error_retry`` seconds; a
        lease lost meanwhile is only logged (the election hands the model over).
        """
        if not self.leads(model):
            return []
        fence = self._fence(model)
        try:
            return self.catch_up(model)
        except LeaseLost as exc:
            _log.warning("mqm: %s", exc)
            return []
        except Exception as exc:
            if fence is not None and not self.leads(model):
                # E.g. the server ended the transaction of a run that stalled past the
                # lease: the model is another replica's now, and so is any retry.
                _log.warning("mqm: %s: the run in flight failed after this replica's lease "
                             "lapsed: %s", model, _describe(exc))
                return []
            self._record_error(model, exc, fence)
            self._soon(model, self._error_retry)
            return []

    def catch_up(
        self, model: str, now: datetime | None = None, *, limit: int | None = None
    ) -> list[CheckRun]:
        """Check each due window after the watermark, oldest first; return the runs.

        A window is due when its end + ``schedule.delay`` is not after ``now``
        (default: the clock, read again before each window, so a long catch-up also
        takes the windows that fall due meanwhile). Stops after ``limit`` runs, when
        the scheduler stops, or when this replica no longer holds the model; raises what
        a run raises (the run and the watermark move are then both rolled back):
        ``LeaseLost`` when the model was taken over while the run was in flight.
        """
        model_cfg = self._config.model(model)
        lock = self._acquire(model)
        if lock is None:
            return []
        runs: list[CheckRun] = []
        self._busy.add(model)
        try:
            while (limit is None or len(runs) < limit) and self._may_continue(model):
                fence = self._fence(model)  # before reading the watermark it moves
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
                                    expect_watermark=watermark, fence=fence)
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

        Does nothing on a replica that does not hold the model, or (unless ``wait``)
        while the model is being compacted already.
        """
        if not self._may_continue(model):
            return None
        lock = self._compacting[model]
        if not lock.acquire(blocking=wait):
            return None
        try:
            result = compact_logs(self._engine, self._config, model, self._fence(model))
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

    def retain(self, model: str) -> RetentionResult | None:
        """The retention job: delete the model's logs, labels and log blocks older than its
        retention (``monitor.run.retention``), in short batches, each checking this
        replica's lease of the model. Logs (does not raise) a failure; the next run goes
        on where it stopped.

        Does nothing on a replica that does not hold the model, or while the model's
        retention runs already; runs beside the model's checks (it deletes only windows
        that no check or recheck reads any more).
        """
        if not self._may_continue(model):
            return None
        lock = self._retaining[model]
        if not lock.acquire(blocking=False):
            return None
        # Not counted busy: a model given up stops its retention at the next batch (each
        # batch checks the lease), without holding the lease for it.
        try:
            result = apply_retention(self._engine, self._config, model, now=self._clock(),
                                     fence=self._fence(model),
                                     keep_going=lambda: self._may_continue(model))
            self._seen[model].update(last_retention_at=self._clock(),
                                     last_retention_error=None)
            if result is not None and (result.logs or result.labels or result.blocks
                                       or result.profiles):
                _log.info("mqm: %s: retention deleted %d logs, %d labels and %d log blocks "
                          "before %s in %.2f s (longest batch %.3f s), and %d unused "
                          "reference profiles", model, result.logs, result.labels,
                          result.blocks, iso_z(result.horizon), result.seconds,
                          result.longest_batch, result.profiles)
            return result
        except Exception as exc:
            self._seen[model].update(last_retention_error=_describe(exc))
            _log.warning("mqm: retention of %s failed: %s", model, _describe(exc),
                         exc_info=not isinstance(exc, MonitorError))
            return None
        finally:
            lock.release()

    def recheck(self, model: str) -> list[CheckRun]:
        """The recheck job: re-judge windows whose accuracy waited for labels, once new
        labels arrived (or they became mature by age).

        Runs under the model's lock (never beside a check of the model) and under the
        model's lease, like a check; does nothing on a replica that does not hold the
        model. A failure is logged and retried next time.
        """
        if not self.leads(model):
            return []
        lock = self._acquire(model)
        if lock is None:
            return []
        self._busy.add(model)
        try:
            if not self._may_continue(model):
                return []
            runs = recompute_immature(self._engine, self._config, model, now=self._clock(),
                                      fence=self._fence(model),
                                      keep_going=lambda: self._may_continue(model))
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

    def _record_error(self, model: str, exc: BaseException, fence: Fence | None) -> None:
        text, now = _describe(exc), self._clock()
        _log.warning("mqm: check of %s stopped: %s (retrying in %g s)", model, text,
                     self._error_retry, exc_info=not isinstance(exc, MonitorError))
        # The store may be what failed (the log has it), or the lease may be gone.
        with contextlib.suppress(Exception):
            record_error(self._engine, model, text, now, fence=fence)
        # After the store: a status() in between must not show the error from memory and
        # then lose it to a store row written a moment later.
        self._seen[model].update(last_error=text, last_error_at=now)

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What /readyz and operators need; never raises.

        ``running``: the jobs are started and not stopping; ``leader``: this replica
        runs the checks of at least one model; ``replica``: its name in the leases;
        ``replicas`` and ``share``: the live replicas it counted at its last round, and
        how many models it should run. Per model: ``leads`` (this replica runs it now),
        ``lease`` (the stored lease: ``holder``, ``token``, ``expires_at``, ``lapsed``;
        null where the store keeps none), ``watermark`` (end of the last window
        checked), ``last_run_at``, ``last_error`` and ``last_error_at`` (from the store,
        shared by all replicas; this replica's last view when the store does not
        answer), ``next_run_at`` (this replica's next check; null on a replica that
        does not run the model), ``last_recheck_at``, ``last_recheck_error``,
        ``last_compact_at``, ``last_compact_error``, ``last_retention_at``,
        ``last_retention_error`` and ``busy`` (this replica).
        """
        stored: dict[str, dict[str, Any]] = {}
        leases: dict[str, Any] = {}
        store_error = None
        try:
            stored = scheduler_rows(self._engine)
            leases = lease_rows(self._engine)
        except Exception as exc:
            store_error = first_line(exc)
        models = {}
        for name in self._config.models:
            seen = self._seen[name]
            if store_error is None:
                row = stored.get(name, {})
                seen.update({k: row.get(k) for k in ("watermark", "last_run_at",
                                                     "last_error", "last_error_at")})
                lease = leases.get(name)
                seen["lease"] = None if lease is None else {
                    "holder": lease.holder, "token": lease.token,
                    "expires_at": iso_z(lease.expires_at), "lapsed": lease.lapsed}
            models[name] = {
                "leads": self.leads(name),
                "lease": seen.get("lease"),
                "watermark": iso_z(seen.get("watermark")),
                "last_run_at": iso_z(seen.get("last_run_at")),
                "next_run_at": iso_z(self._next_run(name)),
                "last_error": seen.get("last_error"),
                "last_error_at": iso_z(seen.get("last_error_at")),
                "last_recheck_at": iso_z(seen.get("last_recheck_at")),
                "last_recheck_error": seen.get("last_recheck_error"),
                "last_compact_at": iso_z(seen.get("last_compact_at")),
                "last_compact_error": seen.get("last_compact_error"),
                "last_retention_at": iso_z(seen.get("last_retention_at")),
                "last_retention_error": seen.get("last_retention_error"),
                "busy": name in self._busy,
            }
        return {"running": self.running, "leader": self.leader, "replica": self.replica,
                "replicas": self._replicas, "share": self._share,
                "store_error": store_error, "models": models}

    def _next_run(self, model: str) -> datetime | None:
        if self._aps is None or not self.leads(model):
            return None
        times = [job.next_run_time for job_id in (f"check:{model}", f"catchup:{model}")
                 if (job := self._aps.get_job(job_id)) is not None and job.next_run_time]
        return min(times) if times else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MonitorError):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"
