"""The scheduler: catch-up from the watermark, no overlap, coalescing, triggers, and one
leader per PostgreSQL database."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent

import monitor.serve.scheduler as scheduler_module
from monitor.errors import ConfigError
from monitor.serve.leader import advisory_key
from monitor.serve.scheduler import (
    MonitorScheduler,
    next_window_end,
    read_watermark,
    trigger_for,
)
from monitor.store.db import create_engine, ensure_schema
from monitor.store.logs import insert_logs
from monitor.store.tables import check_runs, run_metrics, scheduler_state
from tests.conftest import log
from tests.serve.conftest import (
    DAY,
    DELAY,
    MODEL,
    T0,
    load_days,
    lock_holders,
    stored_lease,
    wait_for,
)


class Clock:
    """A settable clock for the scheduler's notion of now."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def runs_per_window(engine: sa.Engine) -> Counter[datetime]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(check_runs.c.window_end)
                            .where(check_runs.c.model == MODEL, check_runs.c.kind == "check"))
        return Counter(end for (end,) in rows)


def window_ends(days: int) -> list[datetime]:
    return [T0 + (d + 1) * DAY for d in range(days)]


def url_of(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def schedulers() -> Iterator[Callable[..., MonitorScheduler]]:
    """Factory of schedulers that are shut down after the test, whatever happens."""
    made: list[MonitorScheduler] = []

    def make(*args: Any, **kwargs: Any) -> MonitorScheduler:
        made.append(MonitorScheduler(*args, **kwargs))
        return made[-1]

    yield make
    for sched in made:
        sched.shutdown(wait=True)


# --- catch-up ------------------------------------------------------------------------


def test_restart_in_the_middle_of_a_backlog_checks_every_window_once(
    engine: sa.Engine, make_config, schedulers
) -> None:
    _, config = make_config(url_of(engine))
    load_days(engine, 6)
    clock = Clock(T0 + 6 * DAY + DELAY)

    first = schedulers(engine, config, clock=clock)
    assert [r.end for r in first.catch_up(MODEL, limit=2)] == window_ends(2)
    assert read_watermark(engine, MODEL) == T0 + 2 * DAY
    first.shutdown()

    # A new process: a new engine and a new scheduler resume from the stored watermark.
    engine2 = create_engine(url_of(engine))
    try:
        second = schedulers(engine2, config, clock=clock)
        assert [r.end for r in second.catch_up(MODEL)] == window_ends(6)[2:]
        assert second.catch_up(MODEL) == []  # nothing is due twice
        assert runs_per_window(engine) == Counter(window_ends(6))
        assert read_watermark(engine, MODEL) == T0 + 6 * DAY

        # The next window is due only once its end + delay has passed, and then checked
        # although it has no logs (insufficient_data): no window is ever skipped.
        clock.now = T0 + 7 * DAY + DELAY - timedelta(seconds=1)
        assert second.catch_up(MODEL) == []
        clock.now += timedelta(seconds=1)
        [run] = second.catch_up(MODEL)
        assert (run.end, run.status) == (T0 + 7 * DAY, "insufficient_data")
        assert runs_per_window(engine) == Counter(window_ends(7))
    finally:
        engine2.dispose()


def test_a_crash_inside_the_run_transaction_moves_neither_run_nor_watermark(
    engine: sa.Engine, make_config, schedulers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watermark moves in the run's transaction: a failure after the run row and the
    watermark were written, before the commit, must leave neither."""
    import monitor.fallback.flag

    _, config = make_config(url_of(engine))
    load_days(engine, 5)
    clock = Clock(T0 + 5 * DAY + DELAY)
    real_observe = monitor.fallback.flag.observe_run
    calls = 0

    def crash_on_third(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # runs inside run_check's transaction, after the watermark moved
            raise RuntimeError("power cut")
        return real_observe(*args, **kwargs)

    monkeypatch.setattr(monitor.fallback.flag, "observe_run", crash_on_third)
    first = schedulers(engine, config, clock=clock)
    with pytest.raises(RuntimeError, match="power cut"):
        first.catch_up(MODEL)
    assert runs_per_window(engine) == Counter(window_ends(2))
    assert read_watermark(engine, MODEL) == T0 + 2 * DAY
    with engine.connect() as conn:  # no orphan run or figures of the failed window
        assert conn.execute(sa.select(sa.func.count()).select_from(check_runs)).scalar() == 2
        orphans = (sa.select(sa.func.count()).select_from(run_metrics)
                   .where(run_metrics.c.run_id.not_in(sa.select(check_runs.c.id))))
        assert conn.execute(orphans).scalar() == 0

    monkeypatch.setattr(monitor.fallback.flag, "observe_run", real_observe)
    second = schedulers(engine, config, clock=clock)
    assert [r.end for r in second.catch_up(MODEL)] == window_ends(5)[2:]
    assert runs_per_window(engine) == Counter(window_ends(5))


def test_two_schedulers_racing_on_one_store_check_each_window_once(
    engine: sa.Engine, make_config, schedulers
) -> None:
    """No shared lock between them (two replicas that both think they lead): the
    watermark's compare-and-set rolls the loser's run back."""
    _, config = make_config(url_of(engine))
    load_days(engine, 6)
    clock = Clock(T0 + 6 * DAY + DELAY)
    engine2 = create_engine(url_of(engine))
    try:
        pair = [schedulers(engine, config, clock=clock), schedulers(engine2, config, clock=clock)]
        barrier = threading.Barrier(2)
        done: list[list[datetime]] = [[], []]
        errors: list[BaseException] = []

        def race(i: int) -> None:
            barrier.wait()
            try:
                done[i] = [r.end for r in pair[i].catch_up(MODEL)]
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(done[0] + done[1]) == window_ends(6)  # each run returned by one
        assert runs_per_window(engine) == Counter(window_ends(6))
    finally:
        engine2.dispose()


def test_two_ticks_of_one_model_never_overlap(
    make_config, schedulers, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    load_days(engine, 4)
    sched = schedulers(engine, config, clock=Clock(T0 + 4 * DAY + DELAY))
    active, most, calls = 0, 0, []
    guard = threading.Lock()
    real_run_check = scheduler_module.run_check

    def slow_run_check(*args: Any, **kwargs: Any) -> Any:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
            calls.append(kwargs["at"])
        try:
            time.sleep(0.05)
            return real_run_check(*args, **kwargs)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(scheduler_module, "run_check", slow_run_check)
    threads = [threading.Thread(target=sched.catch_up, args=(MODEL,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert most == 1  # one check of the model at a time
    assert calls == window_ends(4)  # and no window run twice, not even to be rolled back
    assert runs_per_window(engine) == Counter(window_ends(4))
    engine.dispose()


def test_starting_point_and_error_runs(make_config, schedulers, tmp_path: Path) -> None:
    # No logs: nothing to do and no state yet.
    _, config = make_config(reference=str(tmp_path / "missing.parquet"))
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    clock = Clock(T0 + 10 * DAY)
    sched = schedulers(engine, config, clock=clock)
    assert sched.catch_up(MODEL) == [] and read_watermark(engine, MODEL) is None

    # The first logs: start at the window holding the oldest one (Oct 3).
    with engine.begin() as conn:
        insert_logs(conn, MODEL, [log(i, T0 + 2 * DAY + timedelta(hours=i)) for i in range(30)])
    runs = sched.catch_up(MODEL)
    assert runs[0].start == T0 + 2 * DAY and runs[-1].end == T0 + 9 * DAY
    # The reference set is missing: the runs are "error" runs, stored, and they move the
    # watermark (the fallback policy ignores them).
    assert runs[0].status == "error"
    assert read_watermark(engine, MODEL) == T0 + 9 * DAY
    engine.dispose()


def test_a_stored_check_run_sets_where_a_new_model_starts(
    make_config, schedulers
) -> None:
    from monitor.run.check import run_check

    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    load_days(engine, 5)
    # `mqm check --at` before the first start: the scheduler continues after it.
    run_check(engine, config, MODEL, at=T0 + 3 * DAY)
    sched = schedulers(engine, config, clock=Clock(T0 + 5 * DAY + DELAY))
    assert [r.end for r in sched.catch_up(MODEL)] == window_ends(5)[3:]
    engine.dispose()


def test_next_window_end_aligns() -> None:
    assert next_window_end(T0, DAY) == T0 + DAY
    assert next_window_end(T0 + timedelta(hours=5), DAY) == T0 + DAY
    assert next_window_end(T0 + timedelta(hours=5), timedelta(hours=6)) == T0 + timedelta(hours=6)
    assert advisory_key() == advisory_key("mqm-scheduler") != advisory_key("other")
    assert -(2**63) <= advisory_key() < 2**63


# --- triggers, jobs and status -------------------------------------------------------


def _next_fire(make_config, now: datetime, **model: Any) -> datetime:
    _, config = make_config(**model)
    trigger = trigger_for(MODEL, config.model(MODEL))
    return trigger.get_next_fire_time(None, now)


def test_triggers(make_config) -> None:
    now = datetime(2026, 10, 7, 10, 30, tzinfo=UTC)  # a Wednesday
    # Default: each aligned window end, plus the delay.
    assert _next_fire(make_config, now) == datetime(2026, 10, 8, 0, 5, tzinfo=UTC)
    assert _next_fire(make_config, now, window="6h", schedule={"delay": "10m"}) == \
        datetime(2026, 10, 7, 12, 10, tzinfo=UTC)
    # Cron, read as standard cron in UTC: 0 and 7 are Sunday, 1-5 Monday to Friday.
    assert _next_fire(make_config, now, schedule={"cron": "0 6 * * 0"}) == \
        datetime(2026, 10, 11, 6, 0, tzinfo=UTC)
    assert _next_fire(make_config, now, schedule={"cron": "0 6 * * 7"}) == \
        datetime(2026, 10, 11, 6, 0, tzinfo=UTC)
    saturday = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)
    assert _next_fire(make_config, saturday, schedule={"cron": "15 2 * * 1-5"}) == \
        datetime(2026, 10, 12, 2, 15, tzinfo=UTC)
    assert _next_fire(make_config, now, schedule={"cron": "0 0 * * 5-7"}) == \
        datetime(2026, 10, 9, 0, 0, tzinfo=UTC)
    # "*/2" on weekdays: Sunday, Tuesday, Thursday, Saturday (APScheduler alone: Mon, Wed...).
    assert _next_fire(make_config, now, schedule={"cron": "0 0 * * */2"}) == \
        datetime(2026, 10, 8, 0, 0, tzinfo=UTC)
    assert _next_fire(make_config, now, schedule={"cron": "*/20 * * * *"}) == \
        datetime(2026, 10, 7, 10, 40, tzinfo=UTC)
    # Every: an interval.
    start = datetime.now(UTC)
    fire = _next_fire(make_config, start, schedule={"every": "15m"})
    assert timedelta(minutes=14) < fire - start <= timedelta(minutes=15, seconds=1)
    with pytest.raises(ConfigError, match=r"model 'loan_default': schedule\.cron"):
        _, config = make_config(schedule={"cron": "61 * * * *"})
        MonitorScheduler(create_engine("sqlite://"), config)


def test_started_scheduler_catches_up_and_reports_status(make_config, schedulers) -> None:
    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    load_days(engine, 3)
    clock = Clock(T0 + 3 * DAY + DELAY)
    sched = schedulers(engine, config, clock=clock)
    assert sched.status()["running"] is False
    sched.start()
    status = sched.status()
    assert status["running"] is True and status["leader"] is True  # SQLite: always leads
    # Leading starts with a catch-up at once, not at the next scheduled time.
    wait_for(lambda: read_watermark(engine, MODEL) == T0 + 3 * DAY, 20, "catch-up")
    wait_for(lambda: sched.status()["models"][MODEL]["busy"] is False, 5, "idle")
    model = sched.status()["models"][MODEL]
    assert model["watermark"] == "2026-10-04T00:00:00Z"
    assert model["last_run_at"] == "2026-10-04T00:05:00Z" and model["last_error"] is None
    # The next check: the next real window end + the delay (the one-off catch-up is done).
    expected = next_window_end(datetime.now(UTC) - DELAY, DAY) + DELAY
    assert model["next_run_at"] == expected.isoformat().replace("+00:00", "Z")
    sched.shutdown()
    assert sched.status()["running"] is False and sched.status()["leader"] is False
    assert sched.status()["models"][MODEL]["next_run_at"] is None
    assert runs_per_window(engine) == Counter(window_ends(3))
    engine.dispose()


def test_a_failing_tick_is_recorded_and_retried(
    make_config, schedulers, tmp_path: Path
) -> None:
    import shutil

    from tests.conftest import ROOT

    contract = tmp_path / "contract.yaml"
    _, config = make_config(schema=str(contract))
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    shutil.copy(ROOT / "schemas" / "loan_default.yaml", contract)
    load_days(engine, 2)
    contract.unlink()  # unreadable contract: the run cannot even start
    sched = schedulers(engine, config, clock=Clock(T0 + 2 * DAY + DELAY), error_retry=0.3)
    sched.start()
    wait_for(lambda: sched.status()["models"][MODEL]["last_error"] is not None, 10, "error")
    assert "contract.yaml" in sched.status()["models"][MODEL]["last_error"]
    assert runs_per_window(engine) == Counter()
    shutil.copy(ROOT / "schemas" / "loan_default.yaml", contract)
    # Retried after error_retry, not at the next daily run; the error is then cleared.
    wait_for(lambda: read_watermark(engine, MODEL) == T0 + 2 * DAY, 10, "retry")
    wait_for(lambda: sched.status()["models"][MODEL]["last_error"] is None, 5, "cleared")
    assert runs_per_window(engine) == Counter(window_ends(2))
    engine.dispose()


def test_late_runs_are_coalesced_not_piled_up(make_config, schedulers) -> None:
    _, config = make_config(schedule={"every": "0.1s"})
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    sched = schedulers(engine, config)
    ticks: list[str] = []
    real_tick = sched.tick
    sched.tick = lambda model: (ticks.append(model), real_tick(model))[1]  # type: ignore[method-assign]
    # The run times of each hand-over of the check job to its executor, as APScheduler
    # reports them: what it decided to run, whatever the machine's load.
    submitted: list[list[datetime]] = []

    def on_submit(event: JobSubmissionEvent) -> None:
        if event.job_id == f"check:{MODEL}":
            submitted.append(list(event.scheduled_run_times))

    sched.start()
    assert sched._aps is not None
    sched._aps.add_listener(on_submit, EVENT_JOB_SUBMITTED)
    wait_for(lambda: len(submitted) >= 3, 30, "runs")
    # The scheduler falls at least 0.8 s (8 runs) behind, as if the host had been
    # suspended.
    sched._aps.pause()
    time.sleep(0.8)
    before, ran = len(submitted), len(ticks)
    sched._aps.resume()
    wait_for(lambda: len(submitted) > before and len(ticks) > ran, 30, "the late run")
    # The missed runs are merged into one, and run (not dropped): one run time, the
    # latest (several intervals after the last one before the pause), not one after
    # another for each run missed.
    late, last = submitted[before], submitted[before - 1][-1]
    assert len(late) == 1, late
    assert late[0] - last >= timedelta(seconds=0.5), (last, late)
    engine.dispose()


def test_recheck_runs_under_the_model_lock(
    make_config, schedulers, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    sched = schedulers(engine, config)
    seen: list[bool] = []
    monkeypatch.setattr(scheduler_module, "recompute_immature",
                        lambda *a, **k: seen.append(sched._locks[MODEL].locked()) or [])
    assert sched.recheck(MODEL) == []  # not started: does nothing
    sched.start()
    assert sched.recheck(MODEL) == [] and seen == [True]
    assert sched.status()["models"][MODEL]["last_recheck_at"] is not None
    engine.dispose()


# --- one leader per PostgreSQL database ----------------------------------------------


def stop_then_dispose(scheds: Iterable[MonitorScheduler], engines: list[sa.Engine]) -> None:
    """Stop the test's schedulers, then dispose of their engines: a scheduler still running
    would check a connection out of a disposed engine's new pool, which nothing closes
    (a ResourceWarning in some later test)."""
    for sched in scheds:
        sched.shutdown(wait=True)
    for e in engines:
        e.dispose()


def terminate(url: str, pid: int) -> None:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        eng.dispose()


@pytest.mark.postgres
def test_exactly_one_leader_and_take_over(pg_url: str, make_config, schedulers) -> None:
    _, config = make_config(pg_url)
    engines = [create_engine(pg_url) for _ in range(2)]
    ensure_schema(engines[0])
    a, b = (schedulers(e, config, retry_interval=0.2) for e in engines)
    try:
        a.start()
        b.start()
        assert (a.leader, b.leader) == (True, False)
        time.sleep(0.6)  # several election rounds: still one leader
        assert (a.leader, b.leader) == (True, False)
        assert len(lock_holders(pg_url)) == 1
        assert b.status()["running"] is True and b.status()["models"][MODEL]["next_run_at"] is None
        assert a.status()["models"][MODEL]["next_run_at"] is not None

        # The leader's database session dies (host gone, connection killed): PostgreSQL
        # releases the lock and the follower takes over at its next round.
        [pid] = lock_holders(pg_url)
        held = stored_lease(engines[0])  # a renews it until then: it expires this or later
        assert held.holder == a.replica
        terminate(pg_url, pid)
        wait_for(lambda: b.leader and not a.leader, 60, "b takes over")
        taken = stored_lease(engines[0])
        assert taken.holder == b.replica and taken.token > held.token
        # Not by expiry: acquired while a's lease (15 s by default) still ran, by the
        # database's clock.
        assert taken.acquired_at is not None and taken.acquired_at < held.expires_at, \
            (taken, held)
        time.sleep(0.8)  # a, now retrying, does not get the lead back
        assert (a.leader, b.leader) == (False, True)
        assert len(lock_holders(pg_url)) == 1

        # A leader that shuts down releases the lock at once.
        b.shutdown()
        wait_for(lambda: a.leader, 30, "a takes over again")
        assert lock_holders(pg_url) and b.status()["leader"] is False
    finally:
        stop_then_dispose((a, b), engines)


@pytest.mark.postgres
def test_the_new_leader_catches_up_where_the_old_one_stopped(
    pg_url: str, make_config, schedulers
) -> None:
    _, config = make_config(pg_url)
    engines = [create_engine(pg_url) for _ in range(2)]
    ensure_schema(engines[0])
    load_days(engines[0], 5)
    clock = Clock(T0 + 5 * DAY + DELAY)
    a, b = (schedulers(e, config, retry_interval=0.2, clock=clock) for e in engines)
    try:
        # a leads but has checked only two windows when it dies.
        a.catch_up(MODEL, limit=2)
        a.start()
        b.start()
        wait_for(lambda: read_watermark(engines[0], MODEL) == T0 + 5 * DAY, 20, "a catches up")
        clock.now += 2 * DAY
        a.shutdown()
        wait_for(lambda: b.leader, 30, "b leads")
        wait_for(lambda: read_watermark(engines[0], MODEL) == T0 + 7 * DAY, 20, "b catches up")
        assert runs_per_window(engines[0]) == Counter(window_ends(7))
        with engines[0].connect() as conn:
            row = conn.execute(sa.select(scheduler_state)).mappings().one()
        assert row["last_error"] is None and row["last_run_id"] is not None
    finally:
        stop_then_dispose((a, b), engines)


def test_new_logs_are_compacted_before_a_check_and_by_the_compaction_job(
    engine: sa.Engine, make_config, schedulers
) -> None:
    def covered() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT coalesce(sum(rows), 0) FROM log_blocks"))
                       .scalar_one())

    def logs() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM inference_logs"))
                       .scalar_one())

    _, config = make_config(url_of(engine), schedule={"compact_every": "0.2s"})
    load_days(engine, 2)
    sched = schedulers(engine, config, clock=Clock(T0 + 2 * DAY + DELAY))
    assert covered() == 0
    sched.catch_up(MODEL, limit=1)
    assert covered() == logs() > 0  # compacted before the first window was read
    with engine.begin() as conn:  # more logs, for the job to pick up
        insert_logs(conn, MODEL, [log(90_000 + i, T0 + 2 * DAY + timedelta(hours=i))
                                  for i in range(10)])
    sched.start()
    wait_for(lambda: covered() == logs(), 10, "the compaction job")
    assert sched.status()["models"][MODEL]["last_compact_error"] is None
    # Off: no job, and checks read the rows.
    _, off = make_config(url_of(engine), schedule={"compact_every": None})
    assert schedulers(engine, off).compact(MODEL) is None


# --- retention -----------------------------------------------------------------------


def _logs_before(engine: sa.Engine, when: datetime) -> int:
    from monitor.store.tables import inference_logs

    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(
            inference_logs.c.model == MODEL, inference_logs.c.ts < when)).scalar_one())


def test_the_retention_job_deletes_what_is_older_than_the_retention(
    engine: sa.Engine, make_config, schedulers
) -> None:
    _, config = make_config(url_of(engine), retention="2d",
                            performance={"max_label_delay": "1d"},
                            schedule={"retention_every": "0.2s"})
    load_days(engine, 6)
    sched = schedulers(engine, config, clock=Clock(T0 + 6 * DAY + DELAY))
    assert _logs_before(engine, T0 + 4 * DAY) == 4 * 12
    sched.start()
    wait_for(lambda: _logs_before(engine, T0 + 4 * DAY) == 0, 20, "the retention job")
    assert _logs_before(engine, T0 + 6 * DAY) == 2 * 12  # the last two days are kept
    wait_for(lambda: sched.status()["models"][MODEL]["last_retention_at"] is not None, 20,
             "the retention job's status")
    assert sched.status()["models"][MODEL]["last_retention_error"] is None
    # Off: no job, nothing deleted.
    _, off = make_config(url_of(engine), retention=None)
    assert schedulers(engine, off).retain(MODEL) is None


def test_retention_runs_soon_after_a_model_is_taken_not_an_interval_later(
    engine: sa.Engine, make_config, schedulers
) -> None:
    """A replica restarted more often than retention_every would otherwise never run it."""
    _, config = make_config(url_of(engine), schedule={"retention_every": "6h"})
    sched = schedulers(engine, config)
    sched.start()
    assert sched.leads(MODEL)
    job = sched._aps.get_job(f"retention:{MODEL}")  # type: ignore[union-attr]
    assert job.next_run_time <= datetime.now(UTC) + timedelta(seconds=61)


def test_retention_under_a_lost_lease_deletes_nothing(engine: sa.Engine) -> None:
    """Each batch checks the lease in its own transaction: a replica whose lease another
    one took over (a higher token) deletes no row."""
    from monitor.store.locks import Fence, LeaseLost
    from monitor.store.retention import delete_older
    from monitor.store.tables import model_leases

    load_days(engine, 4)
    with engine.begin() as conn:
        conn.execute(sa.insert(model_leases).values(
            model=MODEL, holder="b", token=2, expires_at=T0 + 10 * DAY))
    stale = Fence(MODEL, "a", 1, 15.0)
    with pytest.raises(LeaseLost, match="the write is refused"):
        delete_older(engine, MODEL, T0 + 3 * DAY, fence=stale, now=T0 + 4 * DAY)
    assert _logs_before(engine, T0 + 3 * DAY) == 3 * 12
    live = Fence(MODEL, "b", 2, 15.0)
    result = delete_older(engine, MODEL, T0 + 3 * DAY, fence=live, now=T0 + 4 * DAY)
    assert result.logs == 3 * 12 and _logs_before(engine, T0 + 3 * DAY) == 0
